"""A real single-node Slurm cluster on localhost for the tests: munged, slurmctld, slurmd.

Started once per test session (see the `slurm` fixture in conftest.py), configured in a temp
folder, and stopped by PID afterwards. Installs the Debian packages when they are missing
(needs root or sudo, as `make test` does).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_ARRAY_SIZE = 3  # small on purpose: a 4-point sweep must be split into two array jobs


def _installed() -> bool:
    return all(shutil.which(b) for b in ("slurmctld", "slurmd", "munged", "sbatch"))


def _node_resources() -> tuple[int, int]:
    """(CPUs, RealMemory MB) as slurmd sees this machine."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    cpus = int(re.search(r"CPUs=(\d+)", out).group(1))
    mem = int(re.search(r"RealMemory=(\d+)", out).group(1))
    return cpus, mem


class LocalSlurm:
    """Lifecycle of the local cluster; `env` holds SLURM_CONF for every client call."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "slurm.conf"
        self.procs: list[subprocess.Popen] = []
        self.munged_pid: int | None = None
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def _write_conf(self) -> None:
        host = socket.gethostname()
        cpus, mem = _node_resources()
        for d in ("state", "spool", "log"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        r = self.root
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
MinJobAge=600
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
NodeName={host} CPUs={cpus} RealMemory={max(1000, mem - 2000)} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")

    def _start_munge(self) -> None:
        ok = subprocess.run("munge -n | unmunge", shell=True, capture_output=True)
        if ok.returncode == 0:
            return  # a munged is already running (not ours: leave it alone)
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True)
        pid_file = Path("/run/munge/munged.pid")
        for _ in range(50):
            if pid_file.exists() and pid_file.read_text().strip():
                self.munged_pid = int(pid_file.read_text())
                break
            time.sleep(0.1)

    def start(self) -> None:
        if not _installed():
            subprocess.run(["bash", str(ROOT / "scripts" / "install-debian-packages.sh")],
                           check=True)
        self._write_conf()
        self._start_munge()
        log = open(self.root / "log" / "daemons.out", "ab")
        for daemon in ("slurmctld", "slurmd"):
            self.procs.append(subprocess.Popen([daemon, "-D", "-f", str(self.conf)],
                                               stdout=log, stderr=log, env=self.env))
            time.sleep(0.5)
        deadline = time.time() + 60
        while time.time() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                                 env=self.env).stdout
            if out.strip() in ("idle", "mixed", "allocated"):
                return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"local Slurm did not become idle; logs in {self.root / 'log'}")

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
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
                              check=check, timeout=60)
