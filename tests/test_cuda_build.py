"""The CUDA C++ backend's build (csrc/cuda and the CUDA half of csrc/<op>.cpp).

1. Every ``csrc/cuda/<op>_cuda.cu`` compiles with nvcc for sm_80 and sm_90 (no
   GPU needed; skipped when nvcc is missing).
2. The standalone driver ``csrc/cuda/tests/check_launchers.cu`` (raw launchers
   against CPU loops) compiles here and runs where a GPU is present.
3. Every op's torch wrapper ``csrc/<op>.cpp`` passes a syntax check with
   ``GRAPHODE_WITH_CUDA`` against the installed torch headers (the CPU wheel
   ships the c10/cuda and ATen/cuda headers, minus one generated macro file
   that is stubbed).
The numerics of the "cuda" (and "triton") backend on CUDA tensors are tested
with every other backend by tests/ops, where a GPU is present.
"""
import os
import shutil
import subprocess
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
CUDA_DIR = CSRC / "cuda"
CU_SOURCES = sorted(p.name for p in CUDA_DIR.glob("*_cuda.cu"))
OPS = sorted(p.stem for p in CSRC.glob("*.cpp") if p.stem != "module")
ARCHS = ("sm_80", "sm_90")
NVCC_FLAGS = ["-std=c++17", "-O3", "--use_fast_math"]  # as setup.py / CMakeLists


def _nvcc():
    for cand in (shutil.which("nvcc"), os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")):
        if cand and os.path.exists(cand):
            return cand
    return None


NVCC = _nvcc()
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found (install the CUDA toolkit or set CUDA_HOME)")


def _gpu_present() -> bool:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        return subprocess.run([smi, "-L"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _run(cmd, cwd=None, env=None, timeout=600):
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return p.returncode, (p.stdout or "") + (p.stderr or "")


# --------------------------------------------------------------------------- layout
@pytest.mark.parametrize("op", ["spmm", "edge_attention", "attention_diffusion"])
def test_every_graph_op_has_its_files(op):
    """One op, one name in every layer: csrc/<op>.cpp, its CPU kernels, its CUDA
    launchers, its Triton module, its public module and its tests."""
    for path in (f"csrc/{op}.cpp", f"csrc/cpu/{op}_cpu.h", f"csrc/cpu/{op}_cpu.cpp", f"csrc/cuda/{op}_cuda.h",
                 f"csrc/cuda/{op}_cuda.cu", f"kernels/{op}.py", f"graphode/ops/{op}.py", f"tests/ops/test_{op}.py"):
        assert (ROOT / path).exists(), path


def test_launchers_include_no_torch():
    for path in CUDA_DIR.glob("*"):
        if path.suffix in (".cu", ".cuh", ".h"):
            text = path.read_text()
            assert "#include <torch" not in text and "#include <ATen" not in text, path.name


# --------------------------------------------------------------------------- compile checks
@pytest.fixture(scope="module")
def nvcc_objects(tmp_path_factory):
    """Compile every .cu for every arch, in parallel; {(source, arch): (rc, log, object)}."""
    if NVCC is None:
        pytest.skip("nvcc not found")
    out = tmp_path_factory.mktemp("nvcc")
    jobs = {}
    for src in CU_SOURCES:
        for arch in ARCHS:
            obj = out / f"{Path(src).stem}.{arch}.o"
            cmd = [NVCC, "-c", *NVCC_FLAGS, f"-arch={arch}", "-I", str(CSRC), str(CUDA_DIR / src), "-o", str(obj)]
            jobs[(src, arch)] = (cmd, obj)
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futs = {key: pool.submit(_run, cmd) for key, (cmd, _) in jobs.items()}
        return {key: (*futs[key].result(), jobs[key][1]) for key in jobs}


@needs_nvcc
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("src", CU_SOURCES)
def test_nvcc_compiles(nvcc_objects, src, arch):
    rc, log, obj = nvcc_objects[(src, arch)]
    assert rc == 0, f"nvcc failed on {src} for {arch}:\n{log}"
    assert obj.exists() and obj.stat().st_size > 0


@pytest.fixture(scope="module")
def launcher_driver(nvcc_objects, tmp_path_factory):
    objs = []
    for src in CU_SOURCES:
        rc, log, obj = nvcc_objects[(src, "sm_80")]
        if rc != 0:
            pytest.fail(f"{src} does not compile:\n{log}")
        objs.append(str(obj))
    exe = tmp_path_factory.mktemp("driver") / "check_launchers"
    cmd = [NVCC, "-std=c++17", "-O2", "-arch=sm_80", "-I", str(CSRC),
           str(CUDA_DIR / "tests" / "check_launchers.cu"), *objs, "-o", str(exe)]
    rc, log = _run(cmd)
    assert rc == 0, f"the launcher check driver does not build:\n{log}"
    return exe


@needs_nvcc
def test_launcher_driver_builds(launcher_driver):
    assert launcher_driver.exists()


@needs_nvcc
@pytest.mark.skipif(not _gpu_present(), reason="no GPU (nvidia-smi -L fails): the driver is built but not run")
def test_launcher_driver_runs(launcher_driver):
    rc, log = _run([str(launcher_driver)], timeout=300)
    print(log)
    assert rc == 0, log


def _torch_include_dirs():
    from torch.utils.cpp_extension import include_paths

    return include_paths()


@pytest.mark.parametrize("op", OPS)
def test_wrapper_syntax_with_cuda(op, tmp_path):
    """csrc/<op>.cpp with GRAPHODE_WITH_CUDA against the installed torch headers (g++ -fsyntax-only)."""
    gxx = shutil.which("g++") or shutil.which("c++")
    if gxx is None:
        pytest.skip("no C++ compiler")
    cuda_inc = None
    for base in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if base and (Path(base) / "include" / "cuda_runtime.h").exists():
            cuda_inc = str(Path(base) / "include")
    if cuda_inc is None:
        pytest.skip("cuda_runtime.h not found (no CUDA toolkit)")
    incs = _torch_include_dirs()
    if not any((Path(d) / "c10" / "cuda" / "CUDAGuard.h").exists() for d in incs):
        pytest.skip("the installed torch ships no c10/cuda headers")
    # CPU wheels lack this generated header; an empty macro file stands in.
    stub = tmp_path / "stub"
    if not any((Path(d) / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h").exists() for d in incs):
        (stub / "c10" / "cuda" / "impl").mkdir(parents=True)
        (stub / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h").write_text("#pragma once\n")
    cmd = [gxx, "-std=c++17", "-fsyntax-only", "-fopenmp", "-Wall", "-Wextra", "-Werror", "-DGRAPHODE_WITH_CUDA",
           "-isystem", str(stub)]
    for d in incs:
        cmd += ["-isystem", d]
    cmd += ["-isystem", cuda_inc, "-isystem", sysconfig.get_paths()["include"], "-I", str(CSRC),
            str(CSRC / f"{op}.cpp")]
    rc, log = _run(cmd)
    assert rc == 0, log
