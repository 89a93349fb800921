set -e
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m diffedu train ddpm --recipe ddpm-cifar10 --data .cifar --out /tmp/run/ddpm --device cuda --save-every 3000 2>&1 | tr '\r' '\n' | grep -v "^training" | tail -5
python3 - <<'PY'
import json, torch
from diffedu import checkpoint
m = checkpoint.load_model("/tmp/run/ddpm")
meta = checkpoint.read_meta("/tmp/run/ddpm")
keep = {k: meta[k] for k in ("schedule", "T", "profile", "step", "seconds")}
keep["history_every_100"] = meta["history"][::100]
keep["hardware"] = torch.cuda.get_device_name() + ", torch " + torch.__version__
import os
checkpoint.save_model(os.environ["OUT"] + "/ddpm-cifar10", m, dtype=torch.float16, **keep)
print(json.dumps({k: v for k, v in keep.items() if k != "history_every_100"}))
PY
python3 -m diffedu sample --ckpt $OUT/ddpm-cifar10 --sampler ddim --steps 100 --n 64 --out $OUT/ddim100.png --device cuda 2>&1 | tail -1
python3 -m diffedu sample --ckpt $OUT/ddpm-cifar10 --sampler ddpm --n 64 --out $OUT/ddpm1000.png --device cuda 2>&1 | tr '\r' '\n' | tail -1
ls -la $OUT
