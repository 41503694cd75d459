"""Build of graphode and its compiled extension graphode._C.

* Every op is csrc/<op>.cpp (schema, checks, torch wrappers) over the
  torch-free CPU kernels csrc/cpu/<op>_cpu.{h,cpp}, always built, with OpenMP.
* The CUDA launchers csrc/cuda/<op>_cuda.cu (raw pointers, no torch header)
  and the CUDA half of each csrc/<op>.cpp (GRAPHODE_WITH_CUDA) are added only
  when the installed torch has CUDA and a CUDA toolkit is found
  (GRAPHODE_WITH_CUDA=0 turns them off, =1 insists on them).
* GRAPHODE_NATIVE_ARCH=0 drops -march=native for a portable binary.

Build without isolation so that the extension links the torch you run with:
    pip install -e . --no-build-isolation
"""
import glob
import os
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _rel(paths):
    return sorted(os.path.relpath(p, ROOT) for p in paths)


def extensions():
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        print("graphode: torch is not installed at build time; building without graphode._C", file=sys.stderr)
        return [], {}
    cpu_sources = _rel(glob.glob(os.path.join(ROOT, "csrc", "*.cpp")) + glob.glob(os.path.join(ROOT, "csrc", "cpu", "*_cpu.cpp")))
    if not cpu_sources:
        return [], {}
    want_cuda = os.environ.get("GRAPHODE_WITH_CUDA", "auto")
    has_cuda = torch.version.cuda is not None and CUDA_HOME is not None
    if want_cuda == "1" and not has_cuda:
        raise RuntimeError("GRAPHODE_WITH_CUDA=1 but torch has no CUDA or no CUDA toolkit was found")
    use_cuda = has_cuda and want_cuda != "0"

    cxx = ["-O3", "-std=c++17", "-fopenmp", "-DNDEBUG", "-ffp-contract=fast"]
    if os.environ.get("GRAPHODE_NATIVE_ARCH", "1") == "1":
        cxx.append("-march=native")
    define_macros = []
    sources = list(cpu_sources)
    kwargs = dict(
        name="graphode._C",
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_link_args=["-fopenmp"],
    )
    if use_cuda:
        sources += _rel(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*_cuda.cu")))
        define_macros.append(("GRAPHODE_WITH_CUDA", "1"))
        ext = CUDAExtension(
            sources=sources,
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "--use_fast_math", "-std=c++17"]},
            **kwargs,
        )
    else:
        ext = CppExtension(sources=sources, define_macros=define_macros, extra_compile_args={"cxx": cxx}, **kwargs)
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = extensions()

setup(
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    packages=find_packages(include=["graphode", "graphode.*"]) + ["graphode.kernels"],
    package_dir={"graphode": "graphode", "graphode.kernels": "kernels"},
)
