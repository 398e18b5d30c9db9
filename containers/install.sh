#!/usr/bin/env bash
# The one install procedure of virnucpro and its pinned stack (requirements.lock), into the virtual environment
# PREFIX (created when absent). The image's %post, `make install` and tests/test_apptainer_def.py run it.
#
#   containers/install.sh PREFIX                     the lock's runtime part + virnucpro (the image)
#   containers/install.sh PREFIX --dev               the whole lock (extras test, bench) + virnucpro editable
#   containers/install.sh PREFIX --flash-attn VER    also flash-attn VER from its GitHub release (untested path)
#
# Only pinned wheels, each checked against the lock's sha256: no resolver run, no sdist built, nothing unpinned.
# virnucpro itself is built with the lock's setuptools (no build isolation, no index). Afterwards `pip check`
# and containers/pins.py confirm the environment holds exactly the lock. PYTHON picks the interpreter that
# creates PREFIX (default python3); pip's own settings apply (PIP_NO_CACHE_DIR=1 in the image).
set -euo pipefail
usage="usage: containers/install.sh PREFIX [--dev] [--flash-attn VERSION]"
source_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prefix=${1:?$usage}
shift
part=runtime editable=() flash_attn=""
while (( $# )); do
  case $1 in
    --dev) part=all editable=(--editable) ;;
    --flash-attn) flash_attn=${2:?$usage}; shift ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
  shift
done
lock=$source_dir/requirements.lock
[[ -x $prefix/bin/python ]] || "${PYTHON:-python3}" -m venv "$prefix"
python=$prefix/bin/python
pip=("$python" -m pip --disable-pip-version-check)
requirements=$(mktemp)
trap 'rm -f "$requirements"' EXIT
"$python" "$source_dir/containers/pins.py" requirements "$lock" "$part" > "$requirements"

"${pip[@]}" install --require-hashes --no-deps --only-binary :all: -r "$requirements"
"${pip[@]}" install --no-deps --no-build-isolation --no-index "${editable[@]}" "$source_dir"
if [[ -n $flash_attn ]]; then
  # The release wheel built for this torch / CUDA / Python / C++ ABI; there is none for every combination, and
  # the build stops if it is missing. Not in the lock (no PyPI wheel); never run on a GPU here.
  wheel=$("$python" - "$flash_attn" <<'EOF'
import sys, torch
version = sys.argv[1]
torch_mm = ".".join(torch.__version__.split("+")[0].split(".")[:2])
cuda = torch.version.cuda.split(".")[0]
abi = str(torch._C._GLIBCXX_USE_CXX11_ABI).upper()
py = f"cp{sys.version_info.major}{sys.version_info.minor}"
print(f"flash_attn-{version}+cu{cuda}torch{torch_mm}cxx11abi{abi}-{py}-{py}-linux_x86_64.whl")
EOF
)
  "${pip[@]}" install --no-deps "https://github.com/Dao-AILab/flash-attention/releases/download/v${flash_attn}/${wheel}"
fi
"${pip[@]}" check
exact=(--exact)
[[ -n $flash_attn ]] && exact=()  # flash-attn is the one package outside the lock, on request
"$python" "$source_dir/containers/pins.py" check "$lock" "$part" "${exact[@]}"
"$prefix/bin/virnucpro" --version
