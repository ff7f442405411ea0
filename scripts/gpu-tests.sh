#!/usr/bin/env bash
# Packs the GPU tests (tests/AdapterSharp.Tests/Gpu, trait Category=Gpu; skipped where CUDA is absent) for a Linux
# GPU host with PyTorch but no .NET SDK, as scripts/cuda-bundle.sh packs the CLI.
#   here:  scripts/gpu-tests.sh [OUT]      (default artifacts/adaptersharp-gpu-tests.txz)
#   there: mkdir t && tar xJf adaptersharp-gpu-tests.txz -C t && t/gpu-tests [TEST-NAME-PART …]
# It prints PASS/FAIL/SKIP per test and exits with the number of failures.
set -euo pipefail
cd "$(dirname "$0")/.."
PROJECT=tests/AdapterSharp.GpuTests ENTRY=AdapterSharp.GpuTests LAUNCHER=gpu-tests \
  exec scripts/cuda-bundle.sh "${1:-artifacts/adaptersharp-gpu-tests.txz}"
