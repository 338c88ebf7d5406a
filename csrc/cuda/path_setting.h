// RNNFAST_CUDA_PATH, the switch between the CUDA loops' two paths, read on every call so that tests and
// benchmarks can change it at run time:
//   general: always the per-step path (one cuBLAS product and one fused kernel a step);
//   persistent: the persistent path wherever its kernels can run the layer;
//   auto (the default): each cell's own rule, the persistent path only where a GPU check has verified it and
//   measured it faster (elman.cu, gated.cu);
//   cluster: the Elman layer's cluster plan (elman_cluster.h) wherever it can run, else the general path; the
//   gated layers' general path. Opt-in until a GPU check has verified and timed it;
//   fused: the Elman layer's fused-step path (elman_fused_step.h: one launch a step, rnnfast's own product)
//   wherever it can run, else the general path; the gated layers' general path. Opt-in likewise.
#pragma once

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>

namespace rnnfast {
namespace cuda {

enum class PathSetting { General, Persistent, Auto, Cluster, Fused };

inline PathSetting cuda_path_setting() {
  const char* env = std::getenv("RNNFAST_CUDA_PATH");
  const char* mode = env && *env ? env : "auto";
  if (!std::strcmp(mode, "general")) return PathSetting::General;
  if (!std::strcmp(mode, "persistent")) return PathSetting::Persistent;
  if (!std::strcmp(mode, "cluster")) return PathSetting::Cluster;
  if (!std::strcmp(mode, "fused")) return PathSetting::Fused;
  TORCH_CHECK(!std::strcmp(mode, "auto"),
              "rnnfast: RNNFAST_CUDA_PATH must be general, persistent, auto, cluster or fused, got '", mode, "'");
  return PathSetting::Auto;
}

}  // namespace cuda
}  // namespace rnnfast
