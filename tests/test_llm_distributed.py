"""``symrl rlhf`` on two CPU processes (gloo): DDP end to end through ``torchrun`` (a killed
run resumes to the uninterrupted result), and FSDP 2's sharded ActorCritic against the whole one
(tests/fsdp_worker.py; accelerate enables FSDP on GPUs only)."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import transformers

from symrl.cli import main
from symrl.run import load_checkpoint, read_jsonl, read_summary
from tests.helpers import checkpoint_tensors, settings, tiny_llama

if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch built without gloo", allow_module_level=True)


ROOT = Path(__file__).parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(root: Path, out: Path, experiment: str, fsdp: bool = False, **overrides) -> subprocess.Popen:
    run = {**settings(root, out), "iterations": 30, "rollouts": 4, "eval_every": 10, "eval_prompts": 4,
           "algo": "sppo", "experiment": experiment, **overrides}
    # torchrun (accelerate launch --cpu starts one process): accelerate reads its variables as DDP on CPU
    entry = [str(ROOT / "tests" / "accelerate_fsdp_on_cpu.py")] if fsdp else ["-m", "symrl.cli"]
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), *entry,
                             "rlhf", *[f"{k}={v}" for k, v in run.items()]],
                            env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _kill_all(pid: int) -> None:
    """SIGKILL the launcher and its workers at once (they run in sessions of their own), as a lost
    machine would."""
    import psutil

    launcher = psutil.Process(pid)
    for process in [*launcher.children(recursive=True), launcher]:
        process.send_signal(signal.SIGKILL)


def _finish(process: subprocess.Popen) -> None:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-4000:]


def test_ddp_run_killed_and_resumed_equals_the_uninterrupted_one(lm_setup, tmp_path, capsys):
    whole_run = tmp_path / "runs" / "whole" / "imdb" / "sppo" / "seed0"
    killed_run = tmp_path / "runs" / "killed" / "imdb" / "sppo" / "seed0"
    _finish(_launch(lm_setup, tmp_path / "runs", "whole"))
    killed = _launch(lm_setup, tmp_path / "runs", "killed")
    deadline = time.monotonic() + 300
    while (load_checkpoint(killed_run) or {}).get("step", 0) < 2:  # killed in iteration 3 or later
        assert killed.poll() is None and time.monotonic() < deadline, killed.stderr.read()[-4000:]
        time.sleep(0.05)
    _kill_all(killed.pid)
    killed.communicate()
    assert read_summary(killed_run) is None, "the run finished before it was killed: nothing was resumed"
    _finish(_launch(lm_setup, tmp_path / "runs", "killed"))
    a, b = checkpoint_tensors(whole_run), checkpoint_tensors(killed_run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time_s"} for r in rows]  # noqa: E731
    metrics = read_jsonl(whole_run / "metrics.jsonl")
    assert [r["step"] for r in metrics] == list(range(1, 31))  # written once, by the main process
    assert metrics[0]["samples"] == 8  # 4 rollouts on each of 2 processes
    assert strip(metrics) == strip(read_jsonl(killed_run / "metrics.jsonl"))
    assert read_jsonl(whole_run / "eval.jsonl") == read_jsonl(killed_run / "eval.jsonl")
    # the checkpoint of two processes (optimizer state keyed by names) loads into one
    assert main(["eval", str(whole_run), "--episodes", "2"]) == 0
    assert '"checkpoint_step": 30' in capsys.readouterr().out


def _run(out: Path, experiment: str) -> Path:
    return out / experiment / "imdb" / "sppo" / "seed0"


@pytest.mark.parametrize("variant", [{}, {"policy.lora_r": 4, "policy.lora_alpha": 8, "grad_accum": 2},
                                     {"policy.value_head": "separate", "min_new_tokens": 0}],
                         ids=["full", "lora-accumulate", "critic-uneven-lengths"])
def test_trainer_under_accelerate_fsdp2_follows_ddp(lm_setup, tmp_path, capsys, variant):
    """The whole loop through accelerate's FSDP 2 (its prepare, state dicts, clipping, no-sync)
    trains as DDP does, and its checkpoint evaluates in one process."""
    out = tmp_path / "runs"
    variant = {("generation." + k if k == "min_new_tokens" else k): v for k, v in variant.items()}
    for experiment, fsdp in (("ddp", False), ("fsdp", True)):
        _finish(_launch(lm_setup, out, experiment, fsdp=fsdp, iterations=4, eval_every=2, **variant))
    a, b = checkpoint_tensors(_run(out, "ddp")), checkpoint_tensors(_run(out, "fsdp"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=2e-4), key
    rewards = [[r["reward_mean"] for r in read_jsonl(_run(out, e) / "metrics.jsonl")] for e in ("ddp", "fsdp")]
    assert len(rewards[1]) == 4 and rewards[0] == pytest.approx(rewards[1], abs=1e-3)
    assert main(["eval", str(_run(out, "fsdp")), "--episodes", "2"]) == 0
    assert '"checkpoint_step": 4' in capsys.readouterr().out


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_fsdp2_bf16_reference_starts_at_zero_kl(lm_setup, tmp_path, architecture):
    """Under FSDP's bf16 policy the frozen reference copy computes as the policy does: before any
    update the KL to it is exactly 0 (it was not while the copy ran in float32 under autocast, nor
    with Llama's rotary frequencies rounded to bf16), with a sampling temperature too."""
    out = tmp_path / "runs"
    model = tiny_llama(lm_setup, tmp_path / "llama") if architecture == "llama" else lm_setup / "models" / "policy"
    _finish(_launch(lm_setup, out, "bf16", fsdp=True, iterations=1, eval_every=0, mixed_precision="bf16",
                    **{"policy.model": model, "generation.temperature": 0.7}))
    assert read_jsonl(_run(out, "bf16") / "metrics.jsonl")[0]["kl"] == 0.0


def test_fsdp2_refuses_quantized_weights_in_one_line(lm_setup, tmp_path):
    process = _launch(lm_setup, tmp_path / "runs", "4bit", fsdp=True, iterations=1,
                      **{"policy.lora_r": 4, "policy.load_in": "4bit"})
    _, err = process.communicate(timeout=300)
    assert process.returncode != 0
    assert "policy.load_in: 4bit weights are not sharded by symrl's FSDP path; allowed with FSDP: full" in err


def test_fsdp2_sharded_actor_critic_matches_the_whole_one(tmp_path):
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=64,
                                     bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "lm")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
                           str(ROOT / "tests" / "fsdp_worker.py"), str(tmp_path / "lm"), str(tmp_path)],
                          env=ENV, capture_output=True, text=True, timeout=300)  # a hang fails in 5 min
    assert done.returncode == 0, done.stderr[-4000:]
    assert "fsdp checks passed" in done.stdout
