#!/usr/bin/env bash
# Run HERE, not on the device (which reaches no registry), from the repository root: downloads
# into .whl/ the Python wheels the device image lacks, to carry with each `run` call that needs
# them (carry [".whl"]; the scripts install them into /tmp/site themselves).
#   tests/device/get_wheels.sh [DIFFUSERS_VERSION]      (default: the diffusers installed here)
# What the device lacks, from /work/.library/device/KINDS.md's package list: diffusers (pure
# Python). Its requirements are there (filelock, huggingface-hub 1.33 >= 1.32, numpy, regex,
# requests, safetensors 0.8.0, Pillow) except importlib_metadata, which diffusers imports only on
# Python < 3.8 (the device has 3.12): it is not carried, since other packages there prefer it to
# the standard library when present. transformers (5.17), peft, accelerate, timm are there.
# The same command by hand:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl diffusers==0.42.1
# .whl/ is git-ignored (.gitignore has /.whl/; where it does not, this adds it to .git/info/exclude as
# the device README asks): never commit it.
set -euo pipefail
[ -d tests/device ] || { echo "run from the repository root"; exit 2; }
version=${1:-$(python3 -c "import diffusers; print(diffusers.__version__)")}
mkdir -p .whl
if ! git check-ignore -q .whl; then   # .gitignore has /.whl/; else the device README's way
  exclude=$(git rev-parse --git-path info/exclude)
  mkdir -p "$(dirname "$exclude")"
  echo '/.whl/' >>"$exclude"
fi
rm -f .whl/diffusers-*.whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl "diffusers==$version"
git check-ignore -q .whl || { echo ".whl is not ignored by git: do not commit it"; exit 1; }
ls -l .whl
echo "carry size: $(du -sh .whl | cut -f1) (the working tree and every carried path: 64 MiB in all)"
