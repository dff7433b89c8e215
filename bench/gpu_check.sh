#!/usr/bin/env bash
# The checks a lent NVIDIA GPU machine runs (the device tool: no TensorFlow, no package index there, and
# at most 64 MiB carried per call): onnxruntime-gpu and the exports travel as parts of one payload, then
# the CUDA parity of every carried export and the CUDA rows (`bench.cuda`).
#
#   bash bench/gpu_check.sh pack RUN...   # here: .gpu/payload.part00.. (60 MB each) and .gpu/payload.sha256
#   bash bench/gpu_check.sh stage         # there, one call per part (carry .gpu/payload.partN): kept in /tmp
#   bash bench/gpu_check.sh run           # there, the last call (carry the last part and .gpu/payload.sha256)
#
# The payload holds onnxruntime-gpu's package folder (its wheel for Python 3.12 and CUDA 13, less the
# TensorRT provider, xz-compressed) and, for every RUN, its export/ and test.tsv as artifacts/gpu/<name>/.
# Results go to $OUT: validate-<name>.log, parity-<name>.json, cuda.json, gpu_check.log.
# .gpu/ is git-ignored (.gitignore): the device tool carries only the parts a call names.
set -euo pipefail
ORT_GPU=${ORT_GPU:-onnxruntime-gpu==1.31.1}
PART_BYTES=${PART_BYTES:-60000000}  # below the 64 MiB a device call carries, with the tree
parts=/tmp/gpu-parts

case "${1:-}" in
pack)
    shift
    [ $# -gt 0 ] || { echo "usage: bash bench/gpu_check.sh pack RUN..." >&2; exit 2; }
    for run in "$@"; do  # every run checked before anything is written
        [ -f "$run/export/config.json" ] && [ -f "$run/test.tsv" ] || {
            echo "error: $run has no export/config.json or test.tsv; make export first" >&2; exit 2; }
    done
    mkdir -p .gpu/build
    if [ ! -s .gpu/ort.tar.xz ]; then
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .gpu/build "$ORT_GPU"
        rm -rf .gpu/build/x && mkdir .gpu/build/x
        unzip -q .gpu/build/onnxruntime_gpu-*.whl 'onnxruntime/*' -d .gpu/build/x
        rm -f .gpu/build/x/onnxruntime/capi/libonnxruntime_providers_tensorrt.so
        tar -C .gpu/build/x -cf - onnxruntime | xz -6 -T2 > .gpu/ort.tar.xz.tmp
        mv .gpu/ort.tar.xz.tmp .gpu/ort.tar.xz
    fi
    rm -rf .gpu/build/runs && mkdir -p .gpu/build/runs/artifacts/gpu
    for run in "$@"; do
        mkdir -p ".gpu/build/runs/artifacts/gpu/$(basename "$run")"
        cp -r "$run/export" "$run/test.tsv" ".gpu/build/runs/artifacts/gpu/$(basename "$run")/"
    done
    rm -f .gpu/payload.part*
    tar -C .gpu -cf - ort.tar.xz -C build/runs artifacts | split -b $PART_BYTES -d -a 2 - .gpu/payload.part
    cat .gpu/payload.part* | sha256sum | sed 's#-$#/tmp/payload.tar#' > .gpu/payload.sha256
    ls -l .gpu/payload.part*
    ;;
stage)
    mkdir -p $parts && cp -v .gpu/payload.part* $parts/ && ls -l $parts
    # What the run will rely on, seen before it: the GPU, and CUDA 13's and cuDNN's libraries.
    nvidia-smi -L
    site=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    find "$site/nvidia" -maxdepth 4 \( -name 'libcublas.so*' -o -name 'libcudnn.so*' -o -name 'libcudart.so*' \
        -o -name 'libcurand.so*' -o -name 'libcufft.so*' \) | sort
    ;;
run)
    out=${OUT:-/tmp/gpu-out}
    mkdir -p $parts "$out"
    cp .gpu/payload.part* $parts/ 2>/dev/null || true
    cat $parts/payload.part* > /tmp/payload.tar
    sha256sum -c .gpu/payload.sha256
    rm -rf artifacts/gpu /tmp/site && mkdir -p /tmp/site
    tar -xf /tmp/payload.tar -O ort.tar.xz | tar -xJf - -C /tmp/site
    tar -xf /tmp/payload.tar artifacts
    # onnxruntime-gpu finds CUDA 13's and cuDNN's libraries where the machine's PyTorch installed them.
    site=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    LD_LIBRARY_PATH=$(find "$site/nvidia" -maxdepth 3 -type d -name lib | tr '\n' ':')${LD_LIBRARY_PATH:-}
    export LD_LIBRARY_PATH PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
    {
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
        grep -m1 'model name' /proc/cpuinfo; nproc
        python3 -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
        ldd /tmp/site/onnxruntime/capi/libonnxruntime_providers_cuda.so | grep 'not found' || true
        for run in artifacts/gpu/*/; do
            name=$(basename "$run")
            python3 -m export.validate "$run" --reference-only --providers cuda 2>&1 \
                | tee "$out/validate-$name.log" || echo "FAILED: validation of $name"
            cp "$run/export/parity.json" "$out/parity-$name.json" || true
        done
        python3 -m bench.cuda artifacts/gpu/*/ --out "$out/cuda.json" || echo "FAILED: bench.cuda"
    } 2>&1 | tee "$out/gpu_check.log"
    ;;
*)
    echo "usage: bash bench/gpu_check.sh pack RUN... | stage | run" >&2
    exit 2
    ;;
esac
