"""A real Slurm cluster on localhost for the tests: its own munged, slurmctld, a slurmd per node.

`LocalSlurm(root)` is one node named after this host; `LocalSlurm(root, nodes=2)` emulates a
2-node cluster: nodes n1, n2 on this host (NodeAddr=127.0.0.1, a port, spool folder, pid and
log file each, `slurmd -N n1`), so the node names do not resolve, as on many real clusters.
Started once per test module, configured in a temp folder on free ports, stopped by PID. A
missing binary only skips the tests, naming its Debian package (`make test` installs them).

Isolated from other test sessions on the same machine (a test loop, another checkout):
- its OWN munged (own key and socket, `AuthInfo=socket=...`). With the shared system munged,
  a session that stopped "its" munged took authentication away from another session's cluster
  mid-job: the steps finished, but their completion messages could not be signed, so Slurm
  showed the job RUNNING until the 900 s deadline (the lost-rank resubmit hang).
- its own block of JOB_ID_BLOCK job ids (FirstJobId, claimed with a lock file): trainlab's
  rendezvous ports come from the job id (15000 + 2 * (id % 10000), watchdog +1), so two
  clusters never use the same ports at once.

Every wait polls a state with a generous deadline; `wait` also fails at once, showing
`scontrol show job` and `sinfo -N -l`, when waiting can no longer succeed (see `check`).
"""

from __future__ import annotations

import fcntl
import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
MAX_ARRAY_SIZE = 3  # small on purpose: a 4-point sweep must be split into two array jobs
INSTALL = "bash scripts/install-debian-packages.sh (or: apt-get install -y slurm-wlm munge)"
# binary -> Debian package (all pulled in by slurm-wlm, except munge itself)
BINARIES = {"slurmctld": "slurmctld", "slurmd": "slurmd", "sbatch": "slurm-client",
            "squeue": "slurm-client", "scontrol": "slurm-client", "scancel": "slurm-client",
            "sinfo": "slurm-client", "munged": "munge", "munge": "munge", "unmunge": "munge"}
START_DEADLINE_S = 180.0  # the daemons come up in ~2 s; this only matters when they do not
LONG = 900.0  # s: deadlines only cost time when something is wrong (a loaded 2-core machine)
JOB_ID_BLOCK = 500  # job ids per cluster (FirstJobId = 1 + block * 500, blocks 1..17)
JOB_ID_LOCKS = Path(tempfile.gettempdir()) / "trainlab-test-slurm-jobids"
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
         "PREEMPTED", "BOOT_FAIL", "DEADLINE"}
# Reasons of a PENDING job that no waiting clears (a test that waits on it would only hang).
NEVER_STARTS = ("DependencyNeverSatisfied", "BadConstraints", "PartitionConfig",
                "PartitionNodeLimit", "PartitionTimeLimit", "InvalidQOS", "InvalidAccount",
                "JobHeldAdmin", "JobHeldUser", "launch_failed_requeued_held")
GHOST_S = 120.0  # s a job may be RUNNING/COMPLETING in Slurm with no process of it alive
CHECK_EVERY_S = 2.0  # `check` asks Slurm at most this often (waits poll files faster)


def missing_reason() -> str | None:
    """Why the local cluster cannot start here (None when it can): not root, or a binary that
    is not installed (named with its Debian package and the command that installs it)."""
    if os.geteuid() != 0:
        return "starting munged/slurmctld/slurmd needs root (make test runs as root in CI)"
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        pkgs = sorted({BINARIES[b] for b in missing})
        return (f"Slurm test cluster: {', '.join(missing)} not found on PATH (Debian package"
                f"{'s' if len(pkgs) > 1 else ''} {', '.join(pkgs)}); install with {INSTALL}")
    return None


def wait_for(cond: Callable[[], Any], timeout: float, what: str | Callable[[], str],
             every: float = 0.5) -> Any:
    """Poll `cond` until it returns something truthy (returned); after `timeout` seconds raise
    AssertionError naming `what` (text, or a function giving it, e.g. the logs)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for "
                                 f"{what() if callable(what) else what}")
        time.sleep(every)


def _node_resources() -> tuple[int, int]:
    """(CPUs, RealMemory MB) as slurmd sees this machine."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    cpus = int(re.search(r"CPUs=(\d+)", out).group(1))
    mem = int(re.search(r"RealMemory=(\d+)", out).group(1))
    return cpus, mem


def _free_ports(n: int) -> list[int]:
    """`n` TCP ports free right now (so two test sessions on one machine do not collide)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _environ(pid: str) -> set[bytes]:
    try:
        return set(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
    except OSError:
        return set()


def processes_with(*marks: str) -> list[int]:
    """PIDs whose environment holds every `NAME=value` in `marks` (read from /proc)."""
    want = {m.encode() for m in marks}
    return [int(d) for d in os.listdir("/proc") if d.isdigit() and want <= _environ(d)]


class LocalSlurm:
    """Lifecycle of the local cluster; `env` holds SLURM_CONF for every client call."""

    def __init__(self, root: Path, nodes: int = 0, cpus_per_node: int = 2,
                 slurmd_timeout_s: int = 300) -> None:
        self.root = root
        self.node_names = [f"n{i + 1}" for i in range(nodes)]  # [] -> one node, this host
        self.cpus_per_node = cpus_per_node
        self.slurmd_timeout_s = slurmd_timeout_s  # how long a silent node stays up (Slurm)
        self.daemons: dict[str, subprocess.Popen] = {}  # munged, slurmctld, slurmd[-n1] ...
        self.stopped: list[subprocess.Popen] = []  # daemons stopped on purpose (reaped)
        self.conf = root / "slurm.conf"
        self.munge_socket = root / "munge.socket"  # moved by _start_munge (see there)
        self.first_job_id = 0
        self._job_id_lock: IO[str] | None = None
        self._checked = 0.0
        self._ghost_since: dict[str, float] = {}
        # marks every daemon, job step and task of this cluster (see kill_node, stop)
        self.env = {**os.environ, "SLURM_CONF": str(self.conf),
                    "TRAINLAB_TEST_CLUSTER": str(root)}

    # ------------------------------------------------------------------------ start / stop
    def _claim_job_ids(self) -> int:
        """FirstJobId of a block of job ids no other live cluster uses (a held lock file)."""
        JOB_ID_LOCKS.mkdir(exist_ok=True)
        for block in range(1, 18):  # block 0 (ids 1-500) is left to clusters without locks
            f = open(JOB_ID_LOCKS / f"block-{block}.lock", "w")  # noqa: SIM115 (held)
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            self._job_id_lock = f
            return 1 + block * JOB_ID_BLOCK
        raise RuntimeError(f"every block of test job ids in {JOB_ID_LOCKS} is held by another "
                           f"running test cluster")

    def _write_conf(self) -> None:
        host = socket.gethostname()
        cpus, mem = _node_resources()
        ctld_port, d_port, *node_ports = _free_ports(2 + len(self.node_names))
        for d in ("state", "spool", "log"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        r = self.root
        if self.node_names:  # emulated nodes on this host: their own port, spool, pid, log
            node_lines = "\n".join(
                f"NodeName={n} NodeHostname={host} NodeAddr=127.0.0.1 Port={port} "
                f"CPUs={self.cpus_per_node} RealMemory=8000 State=UNKNOWN"
                for n, port in zip(self.node_names, node_ports, strict=True))
            spool, pid, log = f"{r}/spool/%n", f"{r}/slurmd-%n.pid", f"{r}/log/slurmd-%n.log"
        else:
            node_lines = (f"NodeName={host} CPUs={cpus} RealMemory={max(1000, mem - 2000)} "
                          f"State=UNKNOWN")
            spool, pid, log = f"{r}/spool", f"{r}/slurmd.pid", f"{r}/log/slurmd.log"
        self.first_job_id = self._claim_job_ids()
        self._start_munge()
        self.conf.write_text(f"""\
ClusterName=trainlabtest
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=2000
MailProg=/bin/true
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MaxArraySize={MAX_ARRAY_SIZE}
FirstJobId={self.first_job_id}
KillWait=5
MinJobAge=3600
SlurmdTimeout={self.slurmd_timeout_s}
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
StateSaveLocation={r}/state
SlurmdSpoolDir={spool}
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={pid}
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={log}
{node_lines}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")

    def _munge_answers(self) -> bool:
        s = f"--socket={self.munge_socket}"
        return subprocess.run(f"munge -n {s} | unmunge {s}", shell=True, capture_output=True,
                              timeout=60).returncode == 0

    def _start_munge(self) -> None:
        """This cluster's own munged: a fresh key; its socket in a folder of its own under
        /tmp (munged wants every folder above the socket searchable by all, which pytest's
        0700 temp folders are not)."""
        key_dir = self.root / "munge-key"
        key_dir.mkdir(mode=0o700)
        sock_dir = Path(tempfile.mkdtemp(prefix="trainlab-test-munge-"))
        sock_dir.chmod(0o755)
        self.munge_socket = sock_dir / "munge.socket"
        key = key_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self._daemon("munged", args=[
            "munged", "--foreground", f"--socket={self.munge_socket}", f"--key-file={key}",
            f"--pid-file={key_dir / 'munged.pid'}", f"--seed-file={key_dir / 'munged.seed'}",
            "--num-threads=4"])

        def answers() -> bool:
            self._alive_or_raise()
            return self._munge_answers()

        wait_for(answers, START_DEADLINE_S, lambda: f"munged to answer:\n{self.logs()}")

    def logs(self) -> str:
        """The tail of every daemon log (for failure messages)."""
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
                         for p in sorted((self.root / "log").glob("*")) if p.is_file())

    def _daemon(self, name: str, node: str | None = None, args: list[str] | None = None) -> None:
        key = f"{name}-{node}" if node else name
        log = open(self.root / "log" / f"{key}.out", "ab")  # noqa: SIM115 (kept by Popen)
        args = args or [name, "-D", "-f", str(self.conf), *(["-N", node] if node else [])]
        if node:
            (self.root / "spool" / node).mkdir(parents=True, exist_ok=True)
        env = {**self.env, "TRAINLAB_TEST_DAEMON": key}  # inherited by its slurmstepd's
        self.daemons[key] = subprocess.Popen(args, stdout=log, stderr=log, env=env)
        log.close()

    def _alive_or_raise(self) -> None:
        for key, p in self.daemons.items():
            if p.poll() is not None:
                raise AssertionError(f"{key} (pid {p.pid}) exited with code {p.returncode}:"
                                     f"\n{self.logs()}")

    def start(self) -> None:
        try:
            self._write_conf()
            self._daemon("slurmctld")

            def ctld_up() -> bool:
                self._alive_or_raise()
                return "UP" in self.run("scontrol", "ping", check=False).stdout

            wait_for(ctld_up, START_DEADLINE_S, lambda: f"slurmctld to answer:\n{self.logs()}")
            for node in self.node_names or [None]:
                self._daemon("slurmd", node)
            wait_for(self.nodes_up, START_DEADLINE_S,
                     lambda: f"every node to be idle:\n{self.logs()}")
        except BaseException:
            self.stop()
            raise

    def node_states(self) -> dict[str, str]:
        """Node name -> Slurm state as sinfo prints it ('idle', 'down*', 'drained', ...)."""
        out = self.run("sinfo", "-h", "-N", "-o", "%N %T", check=False).stdout
        return dict(line.split() for line in out.splitlines() if len(line.split()) == 2)

    def nodes_up(self) -> bool:
        """Every node answers (idle, mixed or allocated); raises if a daemon exited."""
        self._alive_or_raise()
        states = self.node_states()
        return len(states) == (len(self.node_names) or 1) and all(
            st.rstrip("*") in ("idle", "mixed", "allocated") for st in states.values())

    def _kill(self, pids: list[int], sig: int = signal.SIGKILL) -> None:
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        """Stop the daemons (by PID), then kill what is left of this cluster's jobs (their
        slurmstepd's and tasks, found by the cluster's mark in their environment)."""
        procs = [p for k, p in self.daemons.items() if k != "munged"]
        procs += [self.daemons["munged"]] if "munged" in self.daemons else []  # munged last
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for p in self.stopped:
            p.poll()
        self.daemons.clear()
        self._kill(processes_with(f"TRAINLAB_TEST_CLUSTER={self.root}"))
        if self._job_id_lock is not None:
            self._job_id_lock.close()  # releases the block of job ids
            self._job_id_lock = None
        if self.munge_socket.parent.name.startswith("trainlab-test-munge-"):
            shutil.rmtree(self.munge_socket.parent, ignore_errors=True)

    # ------------------------------------------------------------------------ node failure
    def kill_node(self, node: str) -> list[int]:
        """Emulate node `node` dying: SIGKILL its slurmd, its slurmstepd's (they inherit the
        slurmd's environment) and every task running on it; returns the PIDs killed. The
        controller notices after SlurmdTimeout (node DOWN, the job NODE_FAIL)."""
        mark = f"TRAINLAB_TEST_CLUSTER={self.root}"
        d = self.daemons.pop(f"slurmd-{node}")
        d.kill()
        d.wait()
        self.stopped.append(d)
        pids = processes_with(mark, f"TRAINLAB_TEST_DAEMON=slurmd-{node}")  # slurmstepd's
        pids += processes_with(mark, f"SLURMD_NODENAME={node}")  # the tasks on the node
        self._kill(pids)
        return [d.pid, *pids]

    def start_slurmd(self, node: str) -> None:
        """Start node `node`'s slurmd again (after kill_node); waits until every node is up
        (ReturnToService=2 returns a node that was DOWN for not responding). Jobs are left
        as they are (a job requeued after the node failure may start then)."""
        self._daemon("slurmd", node)
        wait_for(self.nodes_up, START_DEADLINE_S,
                 lambda: f"node {node} to be up again:\n{self.diagnosis()}")

    # ------------------------------------------------------------------------ between tests
    def ready(self) -> None:
        """Leave the cluster as a new test expects it: no job queued or running (cancelled),
        a slurmd for every node, every node idle (DOWN/DRAINED ones resumed). Fails loudly."""
        self._alive_or_raise()
        for node in self.node_names:
            if f"slurmd-{node}" not in self.daemons:
                self._daemon("slurmd", node)
        self.run("scancel", f"--user={getpass.getuser()}", check=False)

        def clean() -> bool:
            self._alive_or_raise()
            states = self.node_states()
            bad = [n for n, st in states.items() if re.match(r"(down|drain|fail)", st)]
            for n in bad:
                self.run("scontrol", "update", f"NodeName={n}", "State=RESUME", check=False)
            queued = self.run("squeue", "-h", "-o", "%i", check=False).stdout.split()
            return not bad and not queued and len(states) == (len(self.node_names) or 1) \
                and all(st == "idle" for st in states.values())

        wait_for(clean, START_DEADLINE_S,
                 lambda: f"no job left and every node idle:\n{self.diagnosis()}")

    # ------------------------------------------------------------------------ waiting
    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a Slurm client command (sbatch, squeue, scontrol, ...) against this cluster."""
        return subprocess.run(list(args), capture_output=True, text=True, env=self.env,
                              check=check, timeout=120)

    def job(self, job_id: str) -> list[dict[str, str]]:
        """`scontrol -o show job JOB` as one dict per record (an array: one per task range);
        [] when Slurm does not know the job."""
        out = self.run("scontrol", "-o", "show", "job", job_id, check=False).stdout
        return [dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
                for line in out.splitlines() if line.strip()]

    def diagnosis(self, job: str | None = None) -> str:
        """What Slurm says now: `scontrol show job`, `sinfo -N -l`, the daemons, their logs."""
        show = self.run("scontrol", "show", "job", *([job] if job else []), check=False)
        daemons = ", ".join(f"{k} pid {p.pid} {'alive' if p.poll() is None else 'EXITED'}"
                            for k, p in self.daemons.items())
        return (f"--- scontrol show job {job or ''}\n{show.stdout}{show.stderr}"
                f"--- sinfo -N -l\n{self.run('sinfo', '-N', '-l', check=False).stdout}"
                f"--- daemons: {daemons}\n{self.logs()}")

    def check(self, job: str | None = None, *, nodes_down_ok: bool = False,
              pending_ok: bool = False) -> None:
        """Raise AssertionError (with the diagnosis) when waiting can no longer succeed: a
        daemon of this cluster exited; munged does not answer; a node is DOWN, DRAINED or
        FAILED (unless `nodes_down_ok`); `job` is PENDING for a reason that never clears
        (unless `pending_ok`), or RUNNING/COMPLETING for GHOST_S with no process of it alive
        (Slurm lost its end). Asks Slurm at most every CHECK_EVERY_S."""
        now = time.monotonic()
        if now - self._checked < CHECK_EVERY_S:
            return
        self._checked = now
        problems = [f"{k} (pid {p.pid}) exited with code {p.returncode}"
                    for k, p in self.daemons.items() if p.poll() is not None]
        if not problems and not self._munge_answers():
            problems.append(f"munged does not answer on {self.munge_socket}")
        if not nodes_down_ok:
            problems += [f"node {n} is {st}" for n, st in self.node_states().items()
                         if re.match(r"(down|drain|fail)", st)]
        for rec in self.job(job) if job else []:
            state, reason, jid = rec.get("JobState"), rec.get("Reason", ""), rec.get("JobId")
            if state == "PENDING" and not pending_ok and (
                    rec.get("Priority") == "0" or reason.startswith(NEVER_STARTS)):
                problems.append(f"job {jid} is PENDING and never starts: Reason={reason} "
                                f"Priority={rec.get('Priority')}")
            if state in ("RUNNING", "COMPLETING") and jid:
                if processes_with(f"SLURM_JOB_ID={jid}"):  # ids are unique across clusters
                    self._ghost_since.pop(jid, None)
                elif now - self._ghost_since.setdefault(jid, now) > GHOST_S:
                    problems.append(f"job {jid} is {state} in Slurm but none of its processes "
                                    f"has been alive for {GHOST_S:.0f} s (its end was lost)")
        if problems:
            raise AssertionError(f"{'; '.join(problems)}:\n{self.diagnosis(job)}")

    def wait(self, cond: Callable[[], Any], what: str | Callable[[], str],
             job: str | None = None, timeout: float = LONG, every: float = 0.5,
             extra: Callable[[], str] = str, **check: bool) -> Any:
        """`wait_for(cond)` that runs `check(job, **check)` before every poll and adds the
        diagnosis (and `extra()`, e.g. the job's logs) to a timeout's message."""
        def poll() -> Any:
            self.check(job, **check)
            return cond()

        return wait_for(poll, timeout, lambda: f"{what() if callable(what) else what}\n"
                        f"{extra()}\n{self.diagnosis(job)}", every)

    def wait_job_end(self, job: str, extra: Callable[[], str] = str, **check: bool) -> set[str]:
        """Wait until every task of `job` has ended in Slurm; their final states."""
        def ended() -> set[str] | None:
            states = {r.get("JobState") for r in self.job(job)}
            return states if states and states <= ENDED else None

        return self.wait(ended, f"job {job} to end", job, extra=extra, **check)
