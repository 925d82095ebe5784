"""
The GPU figures in one prepared command: run it first whenever a GPU is lent (issue 26). It stops within `budget`
(7 minutes): every part is a subprocess with its share of it as a time limit, so one that fails or hangs costs its own
figures only.

  python gpu_check.py --out_dir=gpu_out      # on the GPU: gpu_out/gpu_check.json and .md, the table printed
  python gpu_check.py --dry_run=True         # CPU, tiny shapes, about a minute: what CI runs, so it cannot rot
  bash gpu_wheels.sh                         # beforehand, where the registry is reachable: trl, peft, ... (wheels/)

The GPU machine has torch and transformers but no network: `pip install --no-index wheels/*.whl` first (the
command below does it when wheels/ exists). The parts:
  cuda_tests   pytest -m cuda tests/test_gpu.py: bf16 rollout log-probs against the training pass's, the compiled
               decode step does not recompile after warm-up, the static KV cache is reused, the tiny default's first
               steps on the GPU against the CPU's
  bench_<shape>  bench.py at the Qwen2.5-0.5B and 1.5B shapes (random weights, bf16): our rollout against plain and
               static-cache compiled HF generate (ms per decode step, tokens/s, warm-up apart), training tokens/s,
               MFU and peak memory, one full GRPO step, and TRL's GRPOTrainer step beside it (0.5B)
  config_<name>  one update of each config/*.py's training at its model's shape (random weights): tokens/s, MFU,
               peak memory (float32 weights and AdamW states included)
  lm_head      the LM head in float32 (model.scaled_logits, the default) against bf16: the log-prob pass's speed,
               and the spread of the ratio pi_theta / pi_old around 1 at ppo_epochs = 1 (the rollout's pass against
               the training pass's micro-batches)
  tiny_default 50 steps of `python train.py` (the shipped base) on the GPU, with their wall time
"""
import glob
import json
import os
import subprocess
import sys
import time

from configurator import configure

out_dir = "out/gpu_check"
dry_run = False  # CPU, tiny shapes: the same parts, seconds each
budget = 420  # seconds for all the parts together (7 min); each part gets its share of it, LIMITS below
lm_head_only = False  # the lm_head part alone (gpu_check.py runs itself so in a subprocess)
train_config = ""  # a config/*.py: the config_<name> part alone, one update at its model's shape
configure(globals(), sys.argv[1:])

PY = sys.executable
if dry_run:
    PARTS = {
        "cuda_tests": [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "-m", "cuda",
                       "tests/test_gpu.py"],
        "bench_tiny": [PY, "bench.py", "--shape=tiny", "--iters=1", "--ablate=False", "--prompts=2", "--group_size=2",
                       "--new_tokens=4", f"--out={out_dir}/bench_tiny.json"],
        "lm_head": [PY, "gpu_check.py", "--lm_head_only=True", "--dry_run=True", f"--out_dir={out_dir}"],
        "config_countdown_tiny_lowacc": [PY, "gpu_check.py", "--dry_run=True", f"--out_dir={out_dir}",
                                         "--train_config=config/countdown_tiny_lowacc.py"],
        "tiny_default": [PY, "train.py", f"--out_dir={out_dir}/tiny_default", "--max_steps=2", "--eval_at_start=False",
                         "--final_eval_n=2", "--eval_problems=2", "--prompts_per_step=2", "--group_size=4",
                         "--n_problems=300", "--max_new_tokens=12"],
    }
else:
    PARTS = {
        "cuda_tests": [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "-m", "cuda",
                       "tests/test_gpu.py"],
        "bench_qwen2.5-0.5b": [PY, "bench.py", "--shape=qwen2.5-0.5b", "--trl=True", "--ablate=False", "--iters=1",
                               f"--out={out_dir}/bench_qwen2.5-0.5b.json"],
        "bench_qwen2.5-1.5b": [PY, "bench.py", "--shape=qwen2.5-1.5b", "--ablate=False", "--iters=1",
                               f"--out={out_dir}/bench_qwen2.5-1.5b.json"],
        "lm_head": [PY, "gpu_check.py", "--lm_head_only=True", f"--out_dir={out_dir}"],
        **{f"config_{os.path.basename(p)[:-3]}": [PY, "gpu_check.py", f"--out_dir={out_dir}", f"--train_config={p}"]
           for p in sorted(glob.glob("config/*.py")) if "tiny" not in p},
        "tiny_default": [PY, "train.py", f"--out_dir={out_dir}/tiny_default", "--max_steps=50", "--eval_interval=50",
                         "--ckpt_interval=50"],
    }


LIMITS = {"cuda_tests": .1, "lm_head": .07, "tiny_default": .1, "config": .07}  # shares of `budget` (each config
# part .07); the benches split the rest


def limit(name):
    """Seconds part `name` may take before it is stopped (its figures are then missing, not the others')."""
    if dry_run:
        return 240
    benches = [n for n in PARTS if n.startswith("bench")]
    configs = [n for n in PARTS if n.startswith("config_")]
    if name.startswith("config_"):
        return budget * LIMITS["config"]
    rest = 1 - LIMITS["cuda_tests"] - LIMITS["lm_head"] - LIMITS["tiny_default"] - LIMITS["config"] * len(configs)
    return budget * LIMITS.get(name, rest / len(benches))


def lm_head_figures(shape):
    """The log-prob pass with the LM head in float32 and in bf16: seconds per pass over a batch, and the spread of
    exp(logp_train - logp_rollout) over response tokens (one pass of 64 rows, as the rollout; micro-batches of 16
    with gradients on, as the update)."""
    import torch
    import model as model_py
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    if shape == "tiny":
        model, P, T, B = model_py.tiny_model(model_py.char_tokenizer()), 24, 32, 64
    else:
        model = model_py.random_qwen25(shape)
        P, T, B = 128, 256, 64
    model.to(device).train()
    ids = torch.randint(1, model.config.vocab_size, (B, P + T), device=device)
    att = torch.ones_like(ids)
    ctx = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")
    float32_head = model_py.scaled_logits

    def bf16_head(hidden, lm_head, temperature):  # the same product, left to autocast
        return torch.nn.functional.linear(hidden, lm_head.weight).float() / temperature
    out = {}
    for name, head in (("float32", float32_head), ("bf16", bf16_head)):
        model_py.scaled_logits = head
        with torch.no_grad(), ctx:
            rollout_logp = model_py.response_logprobs(model, ids, att, P, 1.0, 64)[0]
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.time()
        with torch.no_grad(), ctx:
            model_py.response_logprobs(model, ids, att, P, 1.0, 64)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.time() - t0
        train_logp = []
        for rows in torch.arange(B, device=device).split(16):
            with ctx:
                lp = model_py.response_logprobs(model, ids[rows], att[rows], P, 1.0)[0]
            train_logp.append(lp.detach())
        ratio = torch.exp(torch.cat(train_logp) - rollout_logp)
        out[name] = {"logprob_pass_s": seconds, "ratio_std": (ratio - 1).std().item(),
                     "ratio_max_abs_dev": (ratio - 1).abs().max().item()}
    model_py.scaled_logits = float32_head
    out["bf16_speedup"] = out["float32"]["logprob_pass_s"] / out["bf16"]["logprob_pass_s"]
    return {"shape": shape, "device": device, **out}


SHAPE_OF = {"Qwen/Qwen2.5-0.5B-Instruct": "qwen2.5-0.5b", "Qwen/Qwen2.5-Math-1.5B": "qwen2.5-1.5b",
            "Qwen/Qwen2.5-3B-Instruct": "qwen2.5-3b"}  # the configs' models, by their shape in model.QWEN25_SHAPES


def config_figures(path):
    """One update of a config's training at its model's shape, random weights, as train.py runs it (float32 weights
    and AdamW, bf16 autocast on a GPU, its micro_batch_size and gradient checkpointing): two micro-batches of
    prompt (128 tokens; tiny 24) + max_new_tokens rows through update.update, after one such update as warm-up
    (AdamW's states allocated). Training tokens/s, MFU (6N + 12 L d T FLOPs per token) and peak GPU memory."""
    import torch
    import loss
    import model as model_py
    import parallel
    import update
    from configurator import script_defaults
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    cfg = configure({**script_defaults("train.py"), "device": device, "dtype": "float32"}, [path])
    torch.manual_seed(0)
    if cfg["init_from"] in ("tiny", "scratch"):
        policy, P = model_py.tiny_model(model_py.char_tokenizer()), 24
    elif cfg["init_from"] in SHAPE_OF:
        policy, P = model_py.random_qwen25(SHAPE_OF[cfg["init_from"]]), 128
    else:
        raise SystemExit(f"{path}: no shape known for init_from={cfg['init_from']!r}: add it to SHAPE_OF")
    policy.to(device).train()
    if cfg["gradient_checkpointing"]:
        policy.gradient_checkpointing_enable()
    T, mb = cfg["max_new_tokens"], cfg["micro_batch_size"]
    rows = 2 * mb
    ids = torch.randint(1, policy.config.vocab_size, (rows, P + T), device=device)
    att, mask = torch.ones_like(ids), torch.ones(rows, T, device=device)
    adv = torch.randn(rows, 1, device=device) * mask
    denom = loss.normaliser(mask, "token-mean")

    def micro_loss(r, t, logp, entropy):  # on-policy GRPO: pi_old is this pass
        return loss.policy_loss(logp, logp.detach(), adv[r, :t], mask[r, :t], denom), torch.zeros(3, device=device)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-6)
    trained = parallel.wrap(policy, None, device)  # the forward update.update calls: log-probs and entropies
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    seconds = []
    for _ in range(2):  # warm-up, then the timed one
        if cuda:
            torch.cuda.synchronize()
        t0 = time.time()
        update.update(trained, policy, optimizer, ids, att, P, mask, micro_loss, micro_batch_size=mb, ctx=ctx)
        if cuda:
            torch.cuda.synchronize()
        seconds.append(time.time() - t0)
    n_params = sum(p.numel() for p in policy.parameters())
    tokens = rows * (P + T)
    flops = (6 * n_params + 12 * policy.config.num_hidden_layers * policy.config.hidden_size * (P + T)) * tokens
    name = torch.cuda.get_device_name() if cuda else "CPU"
    peak = next((v for k, v in model_py.PEAK_BF16_FLOPS.items() if k in name), None)
    return {"config": path, "init_from": cfg["init_from"], "params": n_params, "rows": rows, "tokens_per_row": P + T,
            "gradient_checkpointing": cfg["gradient_checkpointing"], "device": name, "warmup_s": seconds[0],
            "update_s": seconds[1], "train_tok_s": tokens / seconds[1],
            "mfu": flops / seconds[1] / peak if peak else None,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else None}


def run_part(name, cmd):
    """One part in a subprocess: (ok, seconds, the last lines of its output)."""
    t0 = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=limit(name))
        ok, text = p.returncode == 0, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        ok, text = False, f"stopped after {limit(name):.0f} s\n" + (e.stdout or b"").decode(errors="replace")[-2000:]
    return ok, time.time() - t0, "\n".join(text.strip().splitlines()[-15:])


def table(results):
    """The markdown report: each part's status and time, then its figures."""
    lines = ["| part | ok | seconds |", "|---|---|---|"]
    lines += [f"| {name} | {'yes' if r['ok'] else 'NO'} | {r['seconds']:.0f} |" for name, r in results.items()]
    for name, r in results.items():
        figures = r.get("figures")
        if isinstance(figures, dict):
            lines += ["", f"### {name}", "", "| figure | value |", "|---|---|"]
            lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in figures.items()
                      if not isinstance(v, dict)]
            lines += [f"| {k}: {kk} | {vv:.4g} |" for k, v in figures.items() if isinstance(v, dict)
                      for kk, vv in v.items()]
        else:
            lines += ["", f"### {name}", "", "```", r["tail"], "```"]
    return "\n".join(lines)


def main():
    os.makedirs(out_dir, exist_ok=True)
    results, t0 = {}, time.time()
    for name, cmd in PARTS.items():
        print(f"[{time.time() - t0:5.0f}s] {name} (at most {limit(name):.0f} s): {' '.join(cmd[1:])}", flush=True)
        ok, seconds, tail = run_part(name, cmd)
        figures = None
        path = next((a.split("=", 1)[1] for a in cmd if a.startswith("--out=")), None)
        if name == "lm_head" or name.startswith("config_"):
            path = os.path.join(out_dir, f"{name}.json")
        if name == "tiny_default":
            path = os.path.join(out_dir, "tiny_default", "final_eval.json")
        if ok and path and os.path.exists(path):
            with open(path) as f:
                figures = json.load(f)
            if name == "tiny_default":  # the wall time and the numbers, not the per-problem counts
                figures = {"wall_s": seconds, "pass@1": figures["pass@k"]["1"], "n": figures["n"],
                           "device": figures["config"]["device"]}
        results[name] = {"ok": ok, "seconds": seconds, "tail": tail, "figures": figures}
        print(f"[{time.time() - t0:5.0f}s] {name}: {'ok' if ok else 'FAILED'} in {seconds:.0f} s", flush=True)
    with open(os.path.join(out_dir, "gpu_check.json"), "w") as f:
        json.dump({"dry_run": dry_run, "total_s": time.time() - t0, "parts": results}, f, indent=2)
    report = table(results)
    with open(os.path.join(out_dir, "gpu_check.md"), "w") as f:
        f.write(report + "\n")
    print(report)
    print(f"wrote {out_dir}/gpu_check.json and gpu_check.md in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    if train_config:
        with open(os.path.join(out_dir, f"config_{os.path.basename(train_config)[:-3]}.json"), "w") as f:
            json.dump(config_figures(train_config), f, indent=2)
    elif lm_head_only:
        with open(os.path.join(out_dir, "lm_head.json"), "w") as f:
            json.dump(lm_head_figures("tiny" if dry_run else "qwen2.5-0.5b"), f, indent=2)
    else:
        main()
