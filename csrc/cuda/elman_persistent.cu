#include "elman_persistent.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "../cell_math.h"

namespace rnnfast {
namespace cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

// Loads that bypass L1: another block wrote these values in the previous step, and L1 is not coherent.
__device__ __forceinline__ float load_coherent(const float* p) { return __ldcg(p); }
__device__ __forceinline__ float load_coherent(const c10::Half* p) {
  return __half2float(__ldcg(reinterpret_cast<const __half*>(p)));
}
__device__ __forceinline__ float load_coherent(const c10::BFloat16* p) {
  return __bfloat162float(__ldcg(reinterpret_cast<const __nv_bfloat16*>(p)));
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <typename scalar_t>
struct PersistentParams {
  scalar_t* seq;           // forward: output (T, B, D*H), pre-activations in, h_t out; backward: grad_z, same layout
  const scalar_t* out;     // backward only: the forward's output (T, B, D*H)
  const scalar_t* state0;  // forward: hx (D, B, H); backward: unused
  scalar_t* state;         // forward: h_n (D, B, H); backward: grad_h (D, B, H), dL/dh_n in, dL/dh_0 out
  const scalar_t* w_hh;    // (D, H, H)
  int T, B, H, D;
  int units_per_block;     // hidden units owned by one block
  int blocks_per_direction;
};

// Shared memory of one block: its W_hh slice (units_per_block x H), the full state of the step (B x H), and,
// in backward, its own units' running gradient (B x units_per_block); all float32.
inline size_t shared_bytes(const ElmanSizes& s, int units_per_block, bool backward) {
  return sizeof(float) * (static_cast<size_t>(units_per_block) * s.H + static_cast<size_t>(s.B) * s.H +
                          (backward ? static_cast<size_t>(s.B) * units_per_block : 0));
}

template <typename scalar_t, Activation A>
__global__ void __launch_bounds__(kThreads) elman_forward_persistent_kernel(PersistentParams<scalar_t> p) {
  cg::grid_group grid = cg::this_grid();
  const int d = blockIdx.x / p.blocks_per_direction;
  const int j0 = (blockIdx.x % p.blocks_per_direction) * p.units_per_block;
  const int units = max(0, min(p.units_per_block, p.H - j0));
  const int H = p.H, B = p.B, ld = p.D * p.H;
  extern __shared__ float smem[];
  float* w_s = smem;                            // (units_per_block, H): rows j0.. of W_hh
  float* h_s = smem + p.units_per_block * H;    // (B, H): the previous step's state
  const scalar_t* w = p.w_hh + static_cast<int64_t>(d) * H * H;
  for (int i = threadIdx.x; i < units * H; i += kThreads) w_s[i] = static_cast<float>(w[j0 * H + i]);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int prev_t = -1;
  for (int step = 0; step < p.T; ++step) {
    const int t = d == 0 ? step : p.T - 1 - step;
    for (int i = threadIdx.x; i < B * H; i += kThreads) {
      const int b = i / H, k = i % H;
      h_s[i] = prev_t < 0 ? static_cast<float>(p.state0[(static_cast<int64_t>(d) * B + b) * H + k])
                          : load_coherent(p.seq + (static_cast<int64_t>(prev_t) * B + b) * ld + d * H + k);
    }
    __syncthreads();
    for (int o = warp; o < B * units; o += kWarps) {
      const int b = o / units, jj = o % units;
      float acc = 0.f;
      for (int k = lane; k < H; k += 32) acc += w_s[jj * H + k] * h_s[b * H + k];
      acc = warp_sum(acc);
      if (lane == 0) {
        scalar_t* z = p.seq + (static_cast<int64_t>(t) * B + b) * ld + d * H + j0 + jj;
        *z = static_cast<scalar_t>(ActivationFn<A>::forward(static_cast<float>(*z) + acc));
      }
    }
    prev_t = t;
    grid.sync();  // this step's h_t, from every block, is visible to all before the next step reads it
  }
  for (int o = threadIdx.x; o < B * units; o += kThreads) {
    const int b = o / units, j = j0 + o % units;
    p.state[(static_cast<int64_t>(d) * B + b) * H + j] = p.seq[(static_cast<int64_t>(prev_t) * B + b) * ld + d * H + j];
  }
}

template <typename scalar_t, Activation A>
__global__ void __launch_bounds__(kThreads) elman_backward_persistent_kernel(PersistentParams<scalar_t> p) {
  cg::grid_group grid = cg::this_grid();
  const int d = blockIdx.x / p.blocks_per_direction;
  const int k0 = (blockIdx.x % p.blocks_per_direction) * p.units_per_block;
  const int units = max(0, min(p.units_per_block, p.H - k0));
  const int H = p.H, B = p.B, ld = p.D * p.H;
  extern __shared__ float smem[];
  float* wt_s = smem;                                   // (units_per_block, H): columns k0.. of W_hh, transposed
  float* dz_s = smem + p.units_per_block * H;           // (B, H): the step's dL/dz from every block
  float* dh_s = dz_s + B * H;                           // (B, units_per_block): dL/dh of this block's units
  const scalar_t* w = p.w_hh + static_cast<int64_t>(d) * H * H;
  for (int i = threadIdx.x; i < units * H; i += kThreads) {
    const int kk = i / H, j = i % H;
    wt_s[i] = static_cast<float>(w[j * H + k0 + kk]);
  }
  scalar_t* grad_h = p.state + static_cast<int64_t>(d) * B * H;
  for (int i = threadIdx.x; i < B * units; i += kThreads) {
    dh_s[i] = static_cast<float>(grad_h[(i / units) * H + k0 + i % units]);
  }
  __syncthreads();

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int step = p.T - 1; step >= 0; --step) {
    const int t = d == 0 ? step : p.T - 1 - step;
    const int64_t row0 = static_cast<int64_t>(t) * B * ld + d * H;
    for (int i = threadIdx.x; i < B * units; i += kThreads) {
      const int b = i / units, k = k0 + i % units;
      scalar_t* gz = p.seq + row0 + b * ld + k;
      const float g = static_cast<float>(*gz) + dh_s[i];
      *gz = static_cast<scalar_t>(g * ActivationFn<A>::derivative_from_output(static_cast<float>(p.out[row0 + b * ld + k])));
    }
    grid.sync();  // every block's dL/dz_t is visible before any block reads the whole row
    for (int i = threadIdx.x; i < B * H; i += kThreads) {
      dz_s[i] = load_coherent(p.seq + row0 + (i / H) * ld + i % H);
    }
    __syncthreads();
    for (int o = warp; o < B * units; o += kWarps) {
      const int b = o / units, kk = o % units;
      float acc = 0.f;
      for (int j = lane; j < H; j += 32) acc += dz_s[b * H + j] * wt_s[kk * H + j];
      acc = warp_sum(acc);
      if (lane == 0) dh_s[o] = acc;
    }
    __syncthreads();
  }
  for (int i = threadIdx.x; i < B * units; i += kThreads) {
    grad_h[(i / units) * H + k0 + i % units] = static_cast<scalar_t>(dh_s[i]);
  }
}

struct Launch {
  int units_per_block, blocks_per_direction;
};

// A few hidden units per block: enough blocks to spread the per-step product, few enough that the grid-wide
// barrier stays cheap and every block fits on the device at once.
Launch plan_launch(const ElmanSizes& s) {
  const int per_direction_cap = std::max(1, 64 / static_cast<int>(s.D));
  const int blocks = std::clamp(static_cast<int>((s.H + 7) / 8), 1, per_direction_cap);
  const int units = static_cast<int>((s.H + blocks - 1) / blocks);
  return {units, static_cast<int>((s.H + units - 1) / units)};
}

template <typename Kernel>
bool fits_on_device(Kernel kernel, const ElmanSizes& s, const Launch& plan, size_t smem) {
  const int device = c10::cuda::current_device();
  int max_optin = 0, sms = 0, cooperative = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&max_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, device));
  if (!cooperative || smem > static_cast<size_t>(max_optin)) return false;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  int per_sm = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem));
  return static_cast<int64_t>(per_sm) * sms >= s.D * plan.blocks_per_direction;
}

template <typename Kernel, typename scalar_t>
void launch_cooperative(Kernel kernel, PersistentParams<scalar_t> params, const ElmanSizes& s, size_t smem) {
  TORCH_CHECK(fits_on_device(kernel, s, {params.units_per_block, params.blocks_per_direction}, smem),
              "rnnfast: the persistent CUDA path cannot hold this layer on the device (B=", s.B, ", H=", s.H, ")");
  void* args[] = {&params};
  C10_CUDA_CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<void*>(kernel),
                                             dim3(static_cast<unsigned>(s.D * params.blocks_per_direction)),
                                             dim3(kThreads), args, smem, c10::cuda::getCurrentCUDAStream()));
}

template <typename scalar_t>
PersistentParams<scalar_t> make_params(const ElmanSizes& s, const Launch& plan) {
  PersistentParams<scalar_t> p{};
  p.T = static_cast<int>(s.T);
  p.B = static_cast<int>(s.B);
  p.H = static_cast<int>(s.H);
  p.D = static_cast<int>(s.D);
  p.units_per_block = plan.units_per_block;
  p.blocks_per_direction = plan.blocks_per_direction;
  return p;
}

// The persistent kernels' dtypes: all accumulate in float32.
template <typename F>
void dispatch_float_types(at::ScalarType dtype, const F& f) {
  switch (dtype) {
    case at::kFloat: return f(float{});
    case at::kHalf: return f(c10::Half{});
    case at::kBFloat16: return f(c10::BFloat16{});
    default: TORCH_CHECK(false, "rnnfast: the persistent CUDA path has no kernel for ", dtype);
  }
}

}  // namespace

bool persistent_supported(const ElmanSizes& s, at::ScalarType dtype, bool packed) {
  if (packed || s.B == 0) return false;
  if (dtype != at::kFloat && dtype != at::kHalf && dtype != at::kBFloat16) return false;
  if (s.T > INT32_MAX || s.B * s.D * s.H > INT32_MAX) return false;
  const Launch plan = plan_launch(s);
  return fits_on_device(elman_forward_persistent_kernel<float, Activation::Tanh>, s, plan,
                        shared_bytes(s, plan.units_per_block, false)) &&
         fits_on_device(elman_backward_persistent_kernel<float, Activation::Tanh>, s, plan,
                        shared_bytes(s, plan.units_per_block, true));
}

void persistent_forward_recurrence(at::Tensor& output, const at::Tensor& hx, const at::Tensor& weight_hh,
                                   at::Tensor& h_n, const ElmanSizes& s, bool relu) {
  const c10::cuda::CUDAGuard guard(output.device());
  const Launch plan = plan_launch(s);
  dispatch_float_types(output.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    RNNFAST_DISPATCH_ACTIVATION(relu, act, [&] {
        auto p = make_params<scalar_t>(s, plan);
        p.seq = output.data_ptr<scalar_t>();
        p.state0 = hx.const_data_ptr<scalar_t>();
        p.state = h_n.data_ptr<scalar_t>();
        p.w_hh = weight_hh.const_data_ptr<scalar_t>();
        launch_cooperative(elman_forward_persistent_kernel<scalar_t, act>, p, s,
                           shared_bytes(s, plan.units_per_block, false));
      });
  });
}

void persistent_backward_recurrence(at::Tensor& grad_z, at::Tensor& grad_h, const at::Tensor& output,
                                    const at::Tensor& weight_hh, const ElmanSizes& s, bool relu) {
  const c10::cuda::CUDAGuard guard(grad_z.device());
  const Launch plan = plan_launch(s);
  dispatch_float_types(grad_z.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    RNNFAST_DISPATCH_ACTIVATION(relu, act, [&] {
        auto p = make_params<scalar_t>(s, plan);
        p.seq = grad_z.data_ptr<scalar_t>();
        p.out = output.const_data_ptr<scalar_t>();
        p.state = grad_h.data_ptr<scalar_t>();
        p.w_hh = weight_hh.const_data_ptr<scalar_t>();
        launch_cooperative(elman_backward_persistent_kernel<scalar_t, act>, p, s,
                           shared_bytes(s, plan.units_per_block, true));
      });
  });
}

}  // namespace cuda
}  // namespace rnnfast
