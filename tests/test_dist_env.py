"""Distributed environment detection from torchrun and Slurm variables."""

import pytest

from trainlab.dist.env import detect, first_host
from trainlab.errors import ConfigError


@pytest.mark.parametrize("nodelist,first", [
    ("node01", "node01"),
    ("a1,b2", "a1"),
    ("gpu[03-05,9],cpu1", "gpu03"),
    ("gpu[9,03-05]", "gpu9"),
    ("rack1-[007-010]-ib", "rack1-007-ib"),
    ("x[1-2]y[5-6]", "x1y5"),
])
def test_first_host(nodelist, first):
    assert first_host(nodelist) == first


def test_single_process_by_default():
    e = detect({})
    assert (e.rank, e.world_size, e.launcher, e.is_main, e.distributed) == (0, 1, "single",
                                                                            True, False)


def test_torchrun():
    e = detect({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "MASTER_ADDR": "h0",
                "MASTER_PORT": "1234"})
    assert (e.rank, e.local_rank, e.world_size, e.master_addr, e.master_port) == (
        3, 1, 4, "h0", 1234)
    assert e.launcher == "torchrun" and not e.is_main


def test_slurm_srun_step():
    env = {"SLURM_PROCID": "2", "SLURM_LOCALID": "0", "SLURM_STEP_NUM_TASKS": "4",
           "SLURM_NTASKS": "4", "SLURM_JOB_NODELIST": "gpu[10-11]", "SLURM_JOB_ID": "123456"}
    e = detect(env, lookup=lambda name: name)
    assert (e.rank, e.local_rank, e.world_size, e.master_addr) == (2, 0, 4, "gpu10")
    assert e.master_port == 15000 + 2 * (123456 % 10000) and e.launcher == "slurm"


def test_slurm_rendezvous_is_the_first_nodes_address_from_slurm():
    """Node names need not resolve: the address is what Slurm knows (NodeAddr); MASTER_ADDR
    and MASTER_PORT override; consecutive jobs never share a port (the watchdog takes +1)."""
    env = {"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2", "SLURM_JOB_NODELIST": "n[1-2]",
           "SLURM_JOB_ID": "41", "SLURMD_NODENAME": "n2"}
    asked: list[str] = []
    addrs = {"n1": "10.0.0.7", "n2": "10.0.0.8"}
    e = detect(env, lookup=lambda name: asked.append(name) or addrs[name])
    assert (e.master_addr, e.node, asked) == ("10.0.0.7", "n2", ["n1"])
    ports = {detect({**env, "SLURM_JOB_ID": str(j)}, lookup=addrs.get).master_port
             for j in range(40, 44)}
    assert len(ports) == 4 and all(p % 2 == 0 for p in ports)  # p and p+1 per job: disjoint
    e = detect({**env, "MASTER_ADDR": "head", "MASTER_PORT": "2222"}, lookup=addrs.get)
    assert (e.master_addr, e.master_port) == ("head", 2222)


def test_sbatch_script_without_srun_is_single():
    e = detect({"SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_JOB_ID": "7",
                "SLURM_JOB_NODELIST": "n1"})
    assert e.world_size == 1 and e.launcher == "single"


def test_empty_master_addr_and_port_count_as_unset():
    e = detect({"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "", "MASTER_PORT": " "})
    assert (e.master_addr, e.master_port) == ("127.0.0.1", 29500)
    e = detect({"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "1", "SLURM_JOB_ID": "41",
                "SLURM_JOB_NODELIST": "n1", "MASTER_PORT": ""})
    assert e.master_port == 15000 + 2 * 41


@pytest.mark.parametrize("env,name", [
    ({"RANK": "0", "WORLD_SIZE": "1", "MASTER_PORT": "0"}, "MASTER_PORT"),
    ({"RANK": "0", "WORLD_SIZE": "1", "MASTER_PORT": "65535"}, "MASTER_PORT"),  # +1 for the store
    ({"RANK": "-1", "WORLD_SIZE": "2"}, "RANK"),
    ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "two"}, "LOCAL_RANK"),
    ({"SLURM_PROCID": "4", "SLURM_STEP_NUM_TASKS": "4"}, "SLURM_PROCID"),
    ({"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "x"}, "SLURM_STEP_NUM_TASKS"),
])
def test_garbage_launcher_variables_are_named(env, name):
    with pytest.raises(ConfigError, match=f"variable {name}="):
        detect(env, lookup=lambda n: n)


def test_a_rank_of_a_process_group_ends_with_os_exit(monkeypatch, capsys):
    """`cli.main` ends a rank of a process group with os._exit(code) once its work is done
    (interpreter shutdown could abort a finished rank, see dist.setup); any other process
    returns normally."""
    from trainlab.cli import main
    from trainlab.dist import setup

    exits: list[int] = []
    monkeypatch.setattr(setup.os, "_exit", exits.append)
    assert main(["train", "--no-such-option"]) == 2 and exits == []  # no group joined
    monkeypatch.setattr(setup, "_joined", True)
    assert main(["train", "--no-such-option"]) == 2 and exits == [2]
