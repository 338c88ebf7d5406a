// Compiling a CPU loop again for AVX2 and AVX-512 and choosing at run time: the extension is built for the
// baseline x86-64 target (SSE2) so that it loads on any x86-64 CPU, while most CPUs it runs on have wider vectors.
#pragma once

#include <c10/util/Exception.h>

#include <cstdlib>
#include <string>

#if defined(__GNUC__) && defined(__x86_64__)
#define RNNFAST_HAVE_AVX512_VARIANT 1
// GCC prefers 256-bit vectors even with AVX-512 enabled unless told otherwise.
#define RNNFAST_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,prefer-vector-width=512")))
#define RNNFAST_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define RNNFAST_HAVE_AVX512_VARIANT 0
#endif

#if defined(__GNUC__)
// The loop bodies are inlined into each variant, so that they are compiled for that variant's target.
#define RNNFAST_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define RNNFAST_ALWAYS_INLINE inline
#endif

namespace rnnfast {
namespace cpu {

// RNNFAST_CPU_SIMD, which the tests set to run a narrower variant than the CPU's widest: "baseline" or "avx2",
// or empty when unset (the widest). Read once per process; any other value is an error at every call.
inline const std::string& simd_override() {
  static const std::string value = [] {
    const char* env = std::getenv("RNNFAST_CPU_SIMD");
    const std::string choice = env ? env : "";
    TORCH_CHECK(choice.empty() || choice == "baseline" || choice == "avx2",
                "rnnfast: RNNFAST_CPU_SIMD must be baseline or avx2 (or unset), got '", choice, "'");
    return choice;
  }();
  return value;
}

#if RNNFAST_HAVE_AVX512_VARIANT
// Whether to run the AVX-512 variants: the CPU has them and RNNFAST_CPU_SIMD asks for no narrower one.
inline bool cpu_has_avx512() {
  static const bool use = simd_override().empty() && __builtin_cpu_supports("avx512f") &&
                          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512dq");
  return use;
}

// Whether to run AVX2+FMA variants, where a kernel has them, on a CPU without AVX-512 (or told "avx2"), unless
// RNNFAST_CPU_SIMD is "baseline".
inline bool cpu_has_avx2() {
  static const bool use =
      simd_override() != "baseline" && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return use;
}
#endif

// Whether the CPU is Intel's: MKL, the BLAS of PyTorch's x86-64 wheels, runs its tuned code paths only there.
inline bool cpu_is_intel() {
#if defined(__GNUC__) && defined(__x86_64__)
  return __builtin_cpu_is("intel");
#else
  return true;  // no measurements elsewhere: keep the choices measured on Intel
#endif
}

}  // namespace cpu
}  // namespace rnnfast
