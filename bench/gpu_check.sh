#!/usr/bin/env bash
# The GPU paths of r1lab, checked on a machine with one CUDA GPU in under 8 minutes, with no downloads:
#   1. torch engine vs vLLM engine rollout tokens/s on a tiny-world model (vLLM skipped if not installed)
#   2. a 20-step GRPO run on CUDA in bf16 (R1-Zero recipe, tiny world)
#   3. FSDP2 on 1 GPU through torchrun (skipped until r1lab has the multi-process path)
# It uses what the machine has installed: it never pip-installs. Run from the repository root:
#   bash bench/gpu_check.sh [OUT_DIR]        (default: /tmp/r1lab-gpu-check)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/r1lab-gpu-check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" R1LAB_CACHE="$OUT/cache" PYTHONUNBUFFERED=1
say() { printf '\n== %s\n' "$*"; }

say "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    $PY -c "import torch; print('torch', torch.__version__, 'without CUDA')" 2>/dev/null || echo "no torch"
    echo "SKIP everything: this check needs torch with CUDA"; exit 0
fi
$PY -c "import torch, transformers; print('torch', torch.__version__, '| CUDA', torch.version.cuda, '| transformers', transformers.__version__, '| bf16', torch.cuda.is_bf16_supported())"
HAVE_VLLM=0
$PY -c "import vllm; print('vllm', vllm.__version__)" 2>/dev/null && HAVE_VLLM=1 || echo "vllm: not installed (the vLLM checks are skipped)"

say "a tiny-world base model (pretrained here on the GPU, ~1 minute)"
MODEL=$(timeout 300 $PY -m r1lab pretrain 2>&1 | tee "$OUT/pretrain.log" | sed -n 's/^tiny base model: //p' | tail -1)
[ -n "$MODEL" ] || { echo "FAIL: pretraining (see $OUT/pretrain.log)"; tail -5 "$OUT/pretrain.log"; exit 1; }
echo "model: $MODEL"

say "1. rollout tokens/s: torch engine vs vLLM engine (128 prompts x 8 completions, <= 128 tokens, T=1)"
cat > "$OUT/engines.py" <<'PYEOF'
import sys, time
import torch
from r1lab.config import SamplingConfig
from r1lab.data.format import apply_template
from r1lab.engines import make_engine
from r1lab.models import load_model
from r1lab.tinyworld.problems import TinyWorldTask

def main(model_dir, names):
    model, tok = load_model(model_dir, device="cuda", dtype="bf16")
    prompts = [apply_template(e.prompt, "r1-zero", tok, "") for e in TinyWorldTask("tinyworld").examples("test")[:128]]
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=128)
    for name in names:
        engine = make_engine(name, model, tok, seed=0, gpu_memory_utilization=0.3)
        engine.generate(prompts[:8], sampling, n=8)  # warm-up
        torch.cuda.synchronize(); t0 = time.perf_counter()
        rollout = engine.generate(prompts, sampling, n=8)
        torch.cuda.synchronize(); dt = time.perf_counter() - t0
        print(f"{name:6s} {int(rollout.lengths.sum()):7d} tokens in {dt:6.2f} s = {rollout.lengths.sum().item() / dt:9.0f} tokens/s")
        engine.close()

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
PYEOF
ENGINES="torch"; [ $HAVE_VLLM = 1 ] && ENGINES="torch vllm"
timeout 300 $PY "$OUT/engines.py" "$MODEL" $ENGINES 2>&1 | grep -v -E "^(INFO|WARNING|DEBUG)|it/s\]" | tail -20 || echo "FAIL: engines"

say "2. 20 GRPO steps on CUDA in bf16 (torch engine), then the same with the vLLM engine"
for ENGINE in $ENGINES; do
    timeout 300 $PY -m r1lab run r1-zero --out "$OUT/grpo-$ENGINE" model="$MODEL" device=cuda dtype=bf16 rollout.engine=$ENGINE \
        rl.steps=20 rl.checkpoint_every=0 data.test_size=100 > "$OUT/grpo-$ENGINE.log" 2>&1 \
        && grep -E "pass@1 .* ->" "$OUT/grpo-$ENGINE.log" | tail -1 \
        && $PY - "$OUT/grpo-$ENGINE" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
s = [r["step_time"] for r in rows]
keys = ("reward", "accuracy", "completion_len_mean", "rollout_logp_diff_mean", "sync_time")
print("steps", len(rows), "| median s/step", sorted(s)[len(s) // 2], "|",
      " ".join(f"{k} {rows[0].get(k, float('nan')):.3f}->{rows[-1].get(k, float('nan')):.3f}" for k in keys if k in rows[-1]))
PYEOF
    [ $? = 0 ] || { echo "FAIL: GRPO with $ENGINE (see $OUT/grpo-$ENGINE.log)"; tail -5 "$OUT/grpo-$ENGINE.log"; }
done

say "3. FSDP2 on 1 GPU (torchrun --nproc-per-node 1)"
if $PY -m r1lab run --help 2>/dev/null | grep -q -- "--nproc"; then
    timeout 240 $PY -m torch.distributed.run --nproc-per-node 1 -m r1lab run r1-zero --out "$OUT/fsdp" model="$MODEL" \
        device=cuda dtype=bf16 rl.steps=5 rl.checkpoint_every=0 data.test_size=50 > "$OUT/fsdp.log" 2>&1 \
        && grep -E "pass@1 .* ->" "$OUT/fsdp.log" | tail -1 || { echo "FAIL: FSDP2 (see $OUT/fsdp.log)"; tail -5 "$OUT/fsdp.log"; }
else
    echo "SKIP: this r1lab has no multi-process path yet"
fi
say "done: logs in $OUT"
