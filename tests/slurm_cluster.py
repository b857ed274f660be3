"""A real Slurm cluster on localhost for the tests: munged, slurmctld and one slurmd per node.

`LocalSlurm(root)` is one node named after this host; `LocalSlurm(root, nodes=2)` emulates a
2-node cluster: nodes n1, n2 on this host (NodeAddr=127.0.0.1, a port, spool folder, pid and
log file each, `slurmd -N n1`), so the node names do not resolve, as on many real clusters.
Started once per test module (see the fixtures in test_slurm.py and test_multinode.py),
configured in a temp folder on free ports, and stopped by PID afterwards. Installing the
Debian packages is not the tests' business: `make test` runs scripts/install-debian-packages.sh
first; here a missing binary only skips the tests, naming it, its package and the command that
installs it.

Every wait polls a state (munge answers, `scontrol ping` says UP, `sinfo` says idle) with a
generous deadline, and fails with the daemons' logs when it passes.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MAX_ARRAY_SIZE = 3  # small on purpose: a 4-point sweep must be split into two array jobs
INSTALL = "bash scripts/install-debian-packages.sh (or: apt-get install -y slurm-wlm munge)"
# binary -> Debian package (all pulled in by slurm-wlm, except munge itself)
BINARIES = {"slurmctld": "slurmctld", "slurmd": "slurmd", "sbatch": "slurm-client",
            "squeue": "slurm-client", "scontrol": "slurm-client", "scancel": "slurm-client",
            "sinfo": "slurm-client", "munged": "munge", "munge": "munge", "unmunge": "munge"}
START_DEADLINE_S = 180.0  # the daemons come up in ~2 s; this only matters when they do not


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


class LocalSlurm:
    """Lifecycle of the local cluster; `env` holds SLURM_CONF for every client call."""

    def __init__(self, root: Path, nodes: int = 0, cpus_per_node: int = 2) -> None:
        self.root = root
        self.node_names = [f"n{i + 1}" for i in range(nodes)]  # [] -> one node, this host
        self.cpus_per_node = cpus_per_node
        self.pids: dict[str, int] = {}  # daemon (slurmctld, slurmd-n1, ...) -> PID
        self.conf = root / "slurm.conf"
        self.procs: list[subprocess.Popen] = []
        self.munged_pid: int | None = None
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

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
        self.conf.write_text(f"""\
ClusterName=trainlabtest
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
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
KillWait=5
MinJobAge=3600
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

    @staticmethod
    def _munge_answers() -> bool:
        return subprocess.run("munge -n | unmunge", shell=True, capture_output=True,
                              timeout=60).returncode == 0

    def _start_munge(self) -> None:
        if self._munge_answers():
            return  # a munged is already running (not ours: leave it alone)
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True,
                       timeout=60)
        wait_for(self._munge_answers, START_DEADLINE_S, "munged to answer (munge -n | unmunge)")
        pid_file = Path("/run/munge/munged.pid")
        if pid_file.is_file() and pid_file.read_text().strip().isdigit():
            self.munged_pid = int(pid_file.read_text())

    def logs(self) -> str:
        """The tail of every daemon log (for failure messages)."""
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted((self.root / "log").glob("*")) if p.is_file())

    def _daemon(self, name: str, node: str | None = None) -> None:
        key = f"{name}-{node}" if node else name
        log = open(self.root / "log" / f"{key}.out", "ab")  # noqa: SIM115 (kept by Popen)
        args = [name, "-D", "-f", str(self.conf), *(["-N", node] if node else [])]
        if node:
            (self.root / "spool" / node).mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(args, stdout=log, stderr=log, env=self.env)
        log.close()
        self.procs.append(proc)
        self.pids[key] = proc.pid

    def _alive_or_raise(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"{p.args[0]} exited with code {p.returncode}:\n{self.logs()}")

    def start(self) -> None:
        self._write_conf()
        self._start_munge()
        try:
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

    def nodes_up(self) -> bool:
        """Every node answers (idle, mixed or allocated); raises if a daemon exited."""
        self._alive_or_raise()
        out = self.run("sinfo", "-h", "-N", "-o", "%N %T", check=False).stdout.split("\n")
        states = [line.split()[1] for line in out if len(line.split()) == 2]
        want = len(self.node_names) or 1
        return len(states) == want and all(
            st.rstrip("*") in ("idle", "mixed", "allocated") for st in states)

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()
        if self.munged_pid is not None:
            try:
                os.kill(self.munged_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            self.munged_pid = None

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
