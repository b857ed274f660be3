"""Process group setup, teardown, and a watchdog so one failed rank never hangs the others.

    env = detect()                                  # rank, world size, master from the launcher
    device = init_distributed(env, "auto", 60)      # NCCL on GPUs, gloo on CPUs; cuda:LOCAL_RANK
    ...                                             # train; only env.is_main writes
    teardown()

The watchdog: every rank bumps a heartbeat counter in a small TCP key-value store (hosted by
rank 0 on MASTER_PORT+1) every 2 s and watches the others'. A rank that raised an exception
publishes its message there first. When a peer's counter stops moving for `timeout_s`, or a
peer reports a failure, the surviving ranks print which rank failed and exit, instead of
waiting forever inside a collective.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from datetime import timedelta

import torch
import torch.distributed as dist

from trainlab.dist.env import DistEnv
from trainlab.errors import ConfigError, TrainlabError

HEARTBEAT_S = 2.0
PROBE_S = 0.5  # how often a rank retries reaching the rendezvous
_watchdog: Watchdog | None = None
_joined = False  # this process joined a process group (exit_process_of_a_group)


def pick_device(env: DistEnv, name: str) -> torch.device:
    """`run.device` for this rank: with CUDA, rank-local GPU `cuda:LOCAL_RANK`."""
    if name in ("auto", "cuda") and torch.cuda.is_available():
        dev = torch.device("cuda", env.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
        return dev
    if name == "auto":
        return torch.device("cpu")
    return torch.device(name)


def resolve_device(name: str, env: DistEnv | None = None) -> torch.device:
    """`run.device`: auto picks cuda (cuda:LOCAL_RANK when distributed), then mps, then cpu."""
    env = env or DistEnv()
    if name == "auto":
        if torch.cuda.is_available():
            return pick_device(env, "cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"run.device={name!r} is not a device; use auto, cpu, cuda or cuda:N.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"run.device={name!r} but this machine has no usable CUDA GPU; use "
                          f"run.device=cpu (or auto).") from None
    if dev.type == "cuda" and dev.index is None:
        return pick_device(env, "cuda")
    return dev


class RendezvousError(TrainlabError):
    """The ranks of a distributed job could not meet at MASTER_ADDR:MASTER_PORT."""


def _rendezvous_error(env: DistEnv, what: str, timeout_s: float) -> RendezvousError:
    where = f"{env.master_addr}:{env.master_port}"
    source = ("MASTER_ADDR/MASTER_PORT from torchrun" if env.launcher == "torchrun" else
              "the first node's NodeAddr in `scontrol show node` and port 15000 + 2 * (job id "
              "% 10000); MASTER_ADDR / MASTER_PORT override them")
    return RendezvousError(
        f"rank {env.rank} of {env.world_size} (node {env.node or '?'}) {what}. The rendezvous "
        f"is rank 0's address and port {where} ({source}). Check that rank 0 started (its log), "
        f"that every node can resolve and reach {where} (a node name that is not a host name: "
        f"set NodeAddr in slurm.conf or export MASTER_ADDR=<address>; a firewall between "
        f"nodes; the port taken by another job: export MASTER_PORT=<free port>), or raise "
        f"run.dist_timeout_s (now {timeout_s:g} s) when the nodes start far apart.")


def check_rendezvous(env: DistEnv, timeout_s: float) -> None:
    """Fail fast and clearly when the rendezvous cannot be reached: every rank checks that
    MASTER_ADDR resolves; ranks > 0 wait up to `timeout_s` until MASTER_PORT accepts a TCP
    connection (rank 0 hosts it). Raises RendezvousError (no retries inside c10d, no C++
    stack traces)."""
    try:
        socket.getaddrinfo(env.master_addr, env.master_port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise _rendezvous_error(env, f"cannot resolve the rendezvous host {env.master_addr!r} "
                                     f"({e})", timeout_s) from None
    if env.is_main or env.launcher == "torchrun":  # torchrun's agent already waits for it
        return
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        try:
            with socket.create_connection((env.master_addr, env.master_port),
                                          timeout=max(0.1, min(5.0, left))):
                return
        except OSError as e:
            if time.monotonic() + PROBE_S > deadline:
                raise _rendezvous_error(
                    env, f"could not connect to the rendezvous within run.dist_timeout_s="
                         f"{timeout_s:g} s (last attempt: {e})", timeout_s) from None
        time.sleep(PROBE_S)


def init_distributed(env: DistEnv, device: torch.device, timeout_s: float) -> None:
    """Join the process group (no-op for a single process) and start the watchdog. Raises
    RendezvousError when the ranks cannot meet within `timeout_s`."""
    global _watchdog, _joined
    if not env.distributed or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    init = "env://" if env.launcher == "torchrun" else (
        f"tcp://{env.master_addr}:{env.master_port}")
    check_rendezvous(env, timeout_s)
    try:
        dist.init_process_group(backend, init_method=init, rank=env.rank,
                                world_size=env.world_size, timeout=timedelta(seconds=timeout_s))
    except dist.DistError as e:  # e.g. rank 0: "Timed out ... waiting for clients. 1/2 joined"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise _rendezvous_error(env, f"could not set up the process group within "
                                     f"run.dist_timeout_s={timeout_s:g} s ({first})",
                                timeout_s) from None
    _joined = True
    try:
        _watchdog = Watchdog(env, timeout_s)
    except dist.DistError as e:  # its store on MASTER_PORT+1: e.g. the port is taken
        dist.destroy_process_group()
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise _rendezvous_error(env, f"could not open the watchdog's store on port "
                                     f"{env.master_port + 1} ({first})", timeout_s) from None
    _watchdog.start()


def exit_process_of_a_group(code: int) -> None:
    """End this process at once (`os._exit(code)`) when it was a rank of a process group; its
    work is done, written and flushed by then (`cli.main` calls this last). A rank that
    returns into interpreter shutdown instead lets torch/gloo C++ objects be destroyed with
    threads still running, which can abort a finished rank ("terminate called without an
    active exception", SIGABRT): srun or torchrun then kill the other ranks, and Slurm marks a
    job FAILED whose training had completed (seen under load in the 2-node sweep test)."""
    if not _joined:
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or gone: nothing more to write
            pass
    os._exit(code)


def report_failure(message: str) -> None:
    """Tell the other ranks why this rank is about to exit (best effort)."""
    if _watchdog is not None:
        _watchdog.publish_failure(message)


def wait_for_peer_failure(max_wait_s: float) -> None:
    """After a collective failed: give the watchdog time to find the peer that died (it then
    exits this process with a message naming that rank). Returns if every peer looks alive."""
    if _watchdog is None:
        return
    deadline = time.monotonic() + max_wait_s
    while time.monotonic() < deadline and _watchdog.is_alive():
        time.sleep(0.2)


def teardown(clean: bool = True) -> None:
    """Stop the watchdog and leave the process group. `clean`: every rank got here normally,
    so wait for all of them first (rank 0 hosts the watchdog's store and must go last)."""
    global _watchdog
    if _watchdog is not None:
        _watchdog.stop()  # joins its thread: no store call may be in flight when rank 0 exits
    if dist.is_initialized():
        if clean:
            dist.barrier()
        dist.destroy_process_group()
    if _watchdog is not None and not _watchdog.is_alive():
        _watchdog.store = None  # close the store client now, not during interpreter shutdown
    _watchdog = None


class Watchdog(threading.Thread):
    """Heartbeats through a TCPStore; exits this process when a peer is gone."""

    def __init__(self, env: DistEnv, timeout_s: float) -> None:
        super().__init__(daemon=True, name="trainlab-watchdog")
        self.env, self.timeout_s = env, timeout_s
        self.store = dist.TCPStore(env.master_addr, env.master_port + 1, env.world_size,
                                   is_master=env.is_main, timeout=timedelta(seconds=timeout_s),
                                   wait_for_workers=False)
        self.beats = 0
        self._stop_evt = threading.Event()
        self.store.set(f"hb/{env.rank}", "0")
        self.store.set(f"node/{env.rank}", env.node or "?")
        self.master_node = "?"  # rank 0's node, read once it has published it

    def node_of(self, rank: int) -> str:
        """The node `rank` runs on, as published in the store ('?' when unknown)."""
        try:
            return self.store.get(f"node/{rank}").decode() if self.store.check(
                [f"node/{rank}"]) else "?"
        except Exception:  # the store is gone with rank 0
            return "?"

    def who(self, rank: int) -> str:
        """'rank 1 (node n2)': a rank and the node it runs on."""
        return f"rank {rank} (node {self.node_of(rank)})"

    def publish_failure(self, message: str) -> None:
        try:
            self.store.set(f"failed/{self.env.rank}", message[:2000])
        except Exception:  # the store may be gone with rank 0
            pass

    def stop(self) -> None:
        """Tell the peers this rank is done and end the thread (waits for it, so it is not
        inside a TCPStore call while the process exits: a C++ store call still running at
        interpreter shutdown aborts the process with "terminate called without an active
        exception")."""
        self._stop_evt.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=4 * HEARTBEAT_S)
        try:
            self.store.set(f"done/{self.env.rank}", "1")
        except Exception:
            pass

    def run(self) -> None:
        peers = [r for r in range(self.env.world_size) if r != self.env.rank]
        seen = {r: ("", time.monotonic()) for r in peers}
        while not self._stop_evt.wait(HEARTBEAT_S):
            try:
                if self.master_node == "?" and self.env.rank:
                    self.master_node = self.node_of(0)
                self.beats += 1
                self.store.set(f"hb/{self.env.rank}", str(self.beats))
                now = time.monotonic()
                for r in peers:
                    if self.store.check([f"done/{r}"]):
                        continue
                    if self.store.check([f"failed/{r}"]):
                        msg = self.store.get(f"failed/{r}").decode(errors="replace")
                        self._die(f"{self.who(r)} failed: {msg}")
                    beat = self.store.get(f"hb/{r}").decode() if self.store.check(
                        [f"hb/{r}"]) else ""
                    if beat != seen[r][0]:
                        seen[r] = (beat, now)
                    elif now - seen[r][1] > self.timeout_s:
                        self._die(f"{self.who(r)} stopped responding (no heartbeat for "
                                  f"{now - seen[r][1]:.0f} s): it was killed, crashed or hangs")
            except Exception as e:  # store unreachable: rank 0, which hosts it, is gone
                if self._stop_evt.is_set():
                    return
                self._die(f"rank 0 (node {self.master_node}) stopped responding (lost the "
                          f"connection to it: {type(e).__name__})")

    def _die(self, why: str) -> None:
        print(f"trainlab: error: {why}. Stopping rank {self.env.rank} (node "
              f"{self.env.node or '?'}) of {self.env.world_size} too; the last checkpoint is intact, resume with "
              f"run.resume=auto.", file=sys.stderr, flush=True)
        os._exit(1)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks in place (no-op for a single process)."""
    if dist.is_initialized():
        dist.all_reduce(t)
    return t


def all_gather_objects(obj: object) -> list[object]:
    """Every rank's `obj`, in rank order ([obj] for a single process)."""
    if not dist.is_initialized():
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
