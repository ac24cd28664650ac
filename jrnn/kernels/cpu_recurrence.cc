// jrnn's CPU kernel for the two sequential loops of an Elman RNN, as XLA FFI handlers.
//
// Forward (JrnnRnnForward):  h_t = σ(h_{t-1} W_hhᵀ + z_t + b), a masked step copies h_{t-1}.
// A layer (JrnnRnnLayerForward): the same with z_t = x_t W_xhᵀ computed inside the step.
// Backward (JrnnRnnBackward): the hand BPTT's reverse loop
//   δ_t = σ'(a_t) ⊙ (g_t + δ_{t+1} W_hh),  σ' from the stored output h_t,
// where a masked step has δ_t = 0 and passes dL/dh_t to h_{t-1} unchanged; it returns δ and
// ∂L/∂h_0. The weight gradients stay outside (one large GEMM over all T·B rows, in XLA).
//
// Why a kernel: each step is a small (B, H) x (H, H) product followed by an elementwise map.
// Inside lax.scan XLA:CPU runs the product as a library call per step and the map as a separate
// loop over memory; here both run in one pass with the (H, H) matrix kept hot in cache across
// the T steps, and the activation is applied to the accumulators while they are in registers'
// reach. Every array may carry leading "member" axes (jax.vmap, vmap_method="expand_dims"): the
// handler loops over members itself, so a vmapped sweep is one call, not one call per member.
//
// Layouts are XLA's default row-major. Shapes (M = product of leading member axes, possibly
// 1 for an operand shared by every member):
//   w (M, H, H), z (M, T, B, H), b (M, H), h0 (M, B, H), mask (M, T, B) (read iff has_mask),
//   hs (M, T, B, H), g (M, T, B, H); outputs hs (M, T, B, H) | delta (M, T, B, H), dh0 (M, B, H).
// act: 0 tanh, 1 relu, 2 identity. float32 and float64.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

enum Act : int64_t { kTanh = 0, kRelu = 1, kIdentity = 2 };

// 32-byte vectors (GCC's vector extension), loaded and stored unaligned.
template <typename F>
struct Vec;
template <>
struct Vec<float> {
  typedef float type __attribute__((vector_size(32), aligned(4)));
  static constexpr int n = 8;
};
template <>
struct Vec<double> {
  typedef double type __attribute__((vector_size(32), aligned(8)));
  static constexpr int n = 4;
};

// out[r, j0 : j0 + JV·n] += Σ_k in[r, k] · m[k, 0 : JV·n] for R rows (m: one packed strip, rows
// ld_m apart): the R·JV vector
// accumulators stay in registers for the whole k loop (the loops over r and v are unrolled).
template <typename F, int R, int JV>
inline void Panel(const F* in, int64_t ld_in, const F* m, int64_t ld_m, int64_t k_len, F* out,
                  int64_t ld_out, int64_t j0) {
  using V = typename Vec<F>::type;
  constexpr int n = Vec<F>::n;
  V acc[R][JV];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < JV; ++v) acc[r][v] = *reinterpret_cast<const V*>(out + r * ld_out + j0 + v * n);
  for (int64_t k = 0; k < k_len; ++k) {
    V col[JV];
#pragma GCC unroll 16
    for (int v = 0; v < JV; ++v) {
      col[v] = *reinterpret_cast<const V*>(m + k * ld_m + v * n);
      // Keep the column in a register (one load, R uses): left alone, GCC folds the load into
      // each of the R FMAs, and the panel runs at half speed, bound by loads.
#if defined(__x86_64__) || defined(__i386__)
      if constexpr (R > 1) asm("" : "+x"(col[v]));
#elif defined(__aarch64__)
      if constexpr (R > 1) asm("" : "+w"(col[v]));
#endif
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const F s = in[r * ld_in + k];
#pragma GCC unroll 16
      for (int v = 0; v < JV; ++v) acc[r][v] += col[v] * s;
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < JV; ++v) *reinterpret_cast<V*>(out + r * ld_out + j0 + v * n) = acc[r][v];
}

// The right-hand matrix m (K, H) of the step's product, repacked once per call (it is the same
// W_hh at every step): column strips of `wide` vectors, then strips of one vector, each strip
// stored k-major and dense (K x strip width), so that a panel streams one contiguous block
// instead of K rows a whole row of m apart (which map onto a few L1 sets and evict each other).
// The columns past the last whole vector (H mod n) are a last, narrower strip.
template <typename F>
struct PackedMatrix {
  std::vector<F> data;
  int wide = 1;  // vectors per wide strip
  int64_t k_len = 0, h = 0, j_wide = 0, j_vec = 0;  // wide strips cover [0, j_wide), one-vector strips [j_wide, j_vec)

  void Repack(const F* m, int64_t k_len_, int64_t h_, int wide_) {
    constexpr int n = Vec<F>::n;
    k_len = k_len_, h = h_, wide = wide_;
    j_wide = (h / (wide * n)) * wide * n;
    j_vec = (h / n) * n;
    data.resize(k_len * h);
    for (int64_t j = 0; j < h;) {
      const int64_t w = j < j_wide ? wide * n : j < j_vec ? n : h - j_vec;
      F* strip = data.data() + j * k_len;
      for (int64_t k = 0; k < k_len; ++k) std::memcpy(strip + k * w, m + k * h + j, w * sizeof(F));
      j += w;
    }
  }
};

// out[r, j0 : j0 + JV·n] += Σ_k in[r, k] · strip[k, :] over k < k_len, for every row: blocks
// of RB rows, then one-row panels for the rest. `in` rows are ld_in apart.
template <typename F, int RB, int JV>
void Strip(const F* in, int64_t ld_in, const F* strip, int64_t rows, int64_t k_len, int64_t h,
           F* out, int64_t j) {
  constexpr int w = JV * Vec<F>::n;
  int64_t r = 0;
  for (; r + RB <= rows; r += RB) Panel<F, RB, JV>(in + r * ld_in, ld_in, strip, w, k_len, out + r * h, h, j);
  for (; r < rows; ++r) Panel<F, 1, JV>(in + r * ld_in, ld_in, strip, w, k_len, out + r * h, h, j);
}

// k is cut into blocks of at most this many rows of a strip, so that the block (256 x 24 floats:
// 24 KiB) and the rows of `in` it meets stay in a 32 KiB L1 while every row block passes.
constexpr int64_t kBlockK = 256;

// out[:, j_begin:j_end] += in (rows, K) · m[:, j_begin:j_end], with m packed (PackedMatrix),
// `in` and `out` row-major and dense, and j_begin, j_end on strip boundaries (StripBounds).
// Column strips outside, row blocks inside.
template <typename F>
void GemmAcc(const F* in, const PackedMatrix<F>& pm, int64_t rows, F* out, int64_t j_begin,
             int64_t j_end) {
  constexpr int n = Vec<F>::n;
  const int64_t k_len = pm.k_len, h = pm.h;
  int64_t j = j_begin;
  for (; j < std::min(pm.j_wide, j_end); j += pm.wide * n) {
    const F* strip = pm.data.data() + j * k_len;
    const int64_t w = pm.wide * n;
    for (int64_t k0 = 0; k0 < k_len; k0 += kBlockK) {
      const int64_t kc = std::min(kBlockK, k_len - k0);
      if (pm.wide == 8) Strip<F, 1, 8>(in + k0, k_len, strip + k0 * w, rows, kc, h, out, j);  // matrix-vector
      else Strip<F, 4, 3>(in + k0, k_len, strip + k0 * w, rows, kc, h, out, j);  // 12 accumulators
    }
  }
  for (; j < std::min(pm.j_vec, j_end); j += n)
    Strip<F, 4, 1>(in, k_len, pm.data.data() + j * k_len, rows, k_len, h, out, j);
  const F* tail = pm.data.data() + pm.j_vec * k_len;
  const int64_t tail_w = h - pm.j_vec;
  for (; j < j_end; ++j)
    for (int64_t r = 0; r < rows; ++r) {
      F s = out[r * h + j];
      for (int64_t k = 0; k < k_len; ++k) s += in[r * k_len + k] * tail[k * tail_w + (j - pm.j_vec)];
      out[r * h + j] = s;
    }
}

// The columns [0, H) cut into `parts` ranges on strip boundaries (the scalar tail is one unit),
// as even in strips as they can be: parts + 1 bounds.
template <typename F>
std::vector<int64_t> StripBounds(const PackedMatrix<F>& pm, int parts) {
  constexpr int n = Vec<F>::n;
  std::vector<int64_t> units;
  for (int64_t j = 0; j < pm.j_wide; j += pm.wide * n) units.push_back(j);
  for (int64_t j = pm.j_wide; j < pm.j_vec; j += n) units.push_back(j);
  if (pm.j_vec < pm.h) units.push_back(pm.j_vec);
  std::vector<int64_t> bounds;
  const int64_t u = static_cast<int64_t>(units.size());
  for (int p = 0; p < parts; ++p) bounds.push_back(units[p * u / parts]);
  bounds.push_back(pm.h);
  return bounds;
}

// Wide strips of 8 vectors for one to three rows (a matrix-vector product wants many
// independent accumulators along the columns), of 3 vectors for 4 rows and more.
inline int WideFor(int64_t rows) { return rows < 4 ? 8 : 3; }

// tanh in float32 without a libm call, written once for a scalar and once for a vector of 8
// (GCC's vector extension; the branch-free form runs as vector instructions): an odd polynomial
// for |x| < 0.3 (the Taylor series to x^11; the next term is < 2e-9 relative there) and
// 1 - 2 / (e^{2|x|} + 1) above, with e^y = 2^k · p(y - k ln 2), p the Taylor polynomial of
// degree 7 on |r| <= ln(2)/2 (error < 6e-9 relative). Both branches are computed and one is
// selected; a NaN comes back as itself, and so does |x| < 1e-10 (tanh x = x in float32 there).
// float64 uses std::tanh.
template <typename T, typename I>
inline T TanhPoly(T x) {
  const T ax = x < 0 ? -x : x;
  const T x2 = x * x;
  T p = x2 * (-1382.0f / 155925.0f) + 62.0f / 2835.0f;
  p = p * x2 - 17.0f / 315.0f;
  p = p * x2 + 2.0f / 15.0f;
  p = p * x2 - 1.0f / 3.0f;
  const T small = x + x * x2 * p;
  const T y = ax < 20.0f ? 2.0f * ax : 40.0f;
  const T k = (y * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  const T r = (y - k * 0.693145751953125f) - k * 1.42860682030941723e-06f;
  T e = r * (1.0f / 5040.0f) + 1.0f / 720.0f;
  e = e * r + 1.0f / 120.0f;
  e = e * r + 1.0f / 24.0f;
  e = e * r + 1.0f / 6.0f;
  e = e * r + 0.5f;
  e = e * r + 1.0f;
  e = e * r + 1.0f;
  I bits;
  if constexpr (sizeof(T) == sizeof(float)) {
    bits = (static_cast<int32_t>(k) + 127) << 23;
  } else {
    bits = (__builtin_convertvector(k, I) + 127) << 23;
  }
  e = e * __builtin_bit_cast(T, bits);
  const T big_abs = 1.0f - 2.0f / (e + 1.0f);
  const T big = x < 0 ? -big_abs : big_abs;
  const T t = ax < 0.3f ? small : big;
  return (x != x) | (ax < 1e-10f) ? x : t;  // NaN; tiny |x| (and ±0, keeping its sign): x
}

typedef int32_t VecI32 __attribute__((vector_size(32)));

inline void TanhInPlace(float* a, int64_t len) {
  using V = Vec<float>::type;
  int64_t i = 0;
  for (; i + 8 <= len; i += 8) {
    V v = *reinterpret_cast<const V*>(a + i);
    *reinterpret_cast<V*>(a + i) = TanhPoly<V, VecI32>(v);
  }
  for (; i < len; ++i) a[i] = TanhPoly<float, int32_t>(a[i]);
}

inline void TanhInPlace(double* a, int64_t len) {
  for (int64_t i = 0; i < len; ++i) a[i] = std::tanh(a[i]);
}

template <typename F>
void Activate(int64_t act, F* a, int64_t len) {
  if (act == kTanh) {
    TanhInPlace(a, len);
  } else if (act == kRelu) {
    for (int64_t i = 0; i < len; ++i) a[i] = a[i] > 0 ? a[i] : (a[i] != a[i] ? a[i] : F(0));
  }
}

template <typename F>
inline F DerivFromOutput(int64_t act, F h) {
  if (act == kTanh) return F(1) - h * h;
  if (act == kRelu) return h > 0 ? F(1) : F(0);
  return F(1);
}

// Per-member element offset of an operand: `size` elements per member, or 0 when the operand
// holds one copy shared by all members.
inline int64_t Stride(size_t count, int64_t size) {
  return static_cast<int64_t>(count) == size ? 0 : size;
}

// Threads. A call splits its work into `parts` in one of two ways: whole members (a vmapped
// sweep: no synchronisation at all), or, for one member whose step is large enough, the columns
// of every step (a fork and a join per step: the next step reads every column of this one).
// The helpers are XLA's own intra-op threads (the FFI thread pool), not threads of our own: on a
// small machine a second set of threads would fight XLA's idle-spinning ones for the cores.
//
// ForkJoin never waits for a thread that may not come. Each part is claimed by whoever gets to it
// first: a pool thread that picks up its task, or the caller once it has finished part 0. So a
// pool that is busy (or absent: the FFI then runs the task inline), or a pool thread that runs
// this very call, costs parallelism, never a deadlock. A task that runs after the call returned
// finds its part claimed and touches nothing but the shared flags it co-owns.
struct PartFlags {
  explicit PartFlags(int n) : claimed(n), done(n) {}
  std::vector<std::atomic<int>> claimed, done;
};

template <typename Body>
void ForkJoin(ffi::ThreadPool* pool, int parts, const Body& body) {
  if (parts <= 1 || pool == nullptr) {
    for (int i = 0; i < parts; ++i) body(i);
    return;
  }
  auto flags = std::make_shared<PartFlags>(parts);
  const Body* fn = &body;
  for (int i = 1; i < parts; ++i)
    pool->Schedule([flags, fn, i]() {
      if (flags->claimed[i].exchange(1, std::memory_order_acq_rel) == 0) {
        (*fn)(i);
        flags->done[i].store(1, std::memory_order_release);
      }
    });
  body(0);
  for (int i = 1; i < parts; ++i) {
    if (flags->claimed[i].exchange(1, std::memory_order_acq_rel) == 0) {
      body(i);  // nobody took it: run it here
      continue;
    }
    for (int spins = 0; flags->done[i].load(std::memory_order_acquire) == 0; ++spins) {
      if (spins > 4000) std::this_thread::yield();
#if defined(__x86_64__) || defined(__i386__)
      else __builtin_ia32_pause();
#endif
    }
  }
}

// Below this many multiply-adds a step, a fork and join per step costs more than it saves.
constexpr int64_t kMinParallelStep = 1 << 19;

template <typename F>
struct Problem {
  const F* w;
  const F* z;  // forward: the projected inputs; backward: the states h_t
  const F* b;  // forward: the bias; backward: the cotangents g_t
  const F* h0;
  const bool* mask;
  F* out;   // forward: hs; backward: δ
  F* out2;  // backward: ∂L/∂h_0
  int64_t members, t_len, batch, h, act;
  int64_t sw, sz, sb, sh0, sm;  // per-member strides of w, z, b, h0, mask (0: shared)
  // A whole layer (forward only): z_t = x_t W_xhᵀ computed inside the step, never stored.
  const F* x = nullptr;   // (T, B, I)
  const F* wx = nullptr;  // W_xh (H, I)
  int64_t n_in = 0, sx = 0, swx = 0;
};

// The forward loop of member m; each step's product, activation and mask split into the column
// ranges `cols` (one range: no split).
// For a whole layer, `pmx` holds W_xhᵀ packed like W_hhᵀ and each step first adds x_t W_xhᵀ.
template <typename F>
void ForwardSteps(const Problem<F>& p, int64_t m, const PackedMatrix<F>& pm,
                  const PackedMatrix<F>& pmx, const std::vector<int64_t>& cols,
                  ffi::ThreadPool* pool) {
  const int64_t batch = p.batch, h = p.h, step = batch * h;
  const F* bm = p.b + m * p.sb;
  const F* prev = p.h0 + m * p.sh0;
  const F* zm = p.x == nullptr ? p.z + m * p.sz : nullptr;
  const F* xm = p.x == nullptr ? nullptr : p.x + m * p.sx;
  F* out = p.out + m * p.t_len * step;
  const bool* mm = p.mask == nullptr ? nullptr : p.mask + m * p.sm;
  for (int64_t t = 0; t < p.t_len; ++t) {
    F* cur = out + t * step;
    if (xm == nullptr) {
      const F* zt = zm + t * step;
      for (int64_t r = 0; r < batch; ++r)
        for (int64_t j = 0; j < h; ++j) cur[r * h + j] = zt[r * h + j] + bm[j];
    } else {
      for (int64_t r = 0; r < batch; ++r) std::memcpy(cur + r * h, bm, h * sizeof(F));
    }
    ForkJoin(pool, static_cast<int>(cols.size()) - 1, [&](int part) {
      const int64_t j0 = cols[part], j1 = cols[part + 1];
      if (xm != nullptr) GemmAcc<F>(xm + t * batch * p.n_in, pmx, batch, cur, j0, j1);
      GemmAcc<F>(prev, pm, batch, cur, j0, j1);
      for (int64_t r = 0; r < batch; ++r) Activate<F>(p.act, cur + r * h + j0, j1 - j0);
    });
    if (mm != nullptr) {
      const bool* mt = mm + t * batch;
      for (int64_t r = 0; r < batch; ++r)
        if (!mt[r]) std::memcpy(cur + r * h, prev + r * h, h * sizeof(F));
    }
    prev = cur;
  }
}

// The reverse loop of member m; `carry` (B, H) holds dL/dh_t's part from step t + 1 and ends
// as ∂L/∂h_0. Each step's product is split into the column ranges `cols`.
template <typename F>
void BackwardSteps(const Problem<F>& p, int64_t m, const PackedMatrix<F>& pm,
                   const std::vector<int64_t>& cols, F* carry, ffi::ThreadPool* pool) {
  const int64_t batch = p.batch, h = p.h, step = batch * h;
  F* dm = p.out + m * p.t_len * step;
  for (int64_t t = p.t_len - 1; t >= 0; --t) {
    const F* ht = p.z + m * p.sz + t * step;
    const F* gt = p.b + m * p.sb + t * step;
    F* dt = dm + t * step;
    const bool* mt = p.mask == nullptr ? nullptr : p.mask + m * p.sm + t * batch;
    for (int64_t r = 0; r < batch; ++r) {
      F* c = carry + r * h;
      const int64_t o = r * h;
      if (mt != nullptr && !mt[r]) {  // δ_t = 0; dL/dh_t flows on to h_{t-1} unchanged
        for (int64_t j = 0; j < h; ++j) {
          c[j] += gt[o + j];
          dt[o + j] = F(0);
        }
      } else {
        for (int64_t j = 0; j < h; ++j) {
          dt[o + j] = (gt[o + j] + c[j]) * DerivFromOutput<F>(p.act, ht[o + j]);
          c[j] = F(0);
        }
      }
    }
    ForkJoin(pool, static_cast<int>(cols.size()) - 1, [&](int part) {
      GemmAcc<F>(dt, pm, batch, carry, cols[part], cols[part + 1]);  // carry += δ_t W_hh
    });
  }
}

// W_hh for the forward product (h_{t-1} W_hhᵀ: packs Wᵀ) or the backward one (δ_t W_hh: packs W).
// W_xh (H, I) is packed as W_xhᵀ (I, H) the same way (k_len = I).
template <typename F>
void PackFor(bool forward, const F* wm, int64_t h, int64_t k_len, int64_t batch,
             std::vector<F>& scratch, PackedMatrix<F>& pm) {
  if (!forward) return pm.Repack(wm, k_len, h, WideFor(batch));
  scratch.resize(h * k_len);
  for (int64_t i = 0; i < h; ++i)
    for (int64_t j = 0; j < k_len; ++j) scratch[j * h + i] = wm[i * k_len + j];
  pm.Repack(scratch.data(), k_len, h, WideFor(batch));
}

// Members [m0, m1) one after another, each step split into `col_parts` column ranges.
template <typename F>
void RunMembers(const Problem<F>& p, bool forward, int64_t m0, int64_t m1, int col_parts,
                ffi::ThreadPool* pool) {
  const int64_t step = p.batch * p.h;
  std::vector<F> scratch, carry(forward ? 0 : step);
  PackedMatrix<F> pm, pmx;
  for (int64_t m = m0; m < m1; ++m) {
    PackFor<F>(forward, p.w + m * p.sw, p.h, p.h, p.batch, scratch, pm);
    if (p.x != nullptr) PackFor<F>(true, p.wx + m * p.swx, p.h, p.n_in, p.batch, scratch, pmx);
    const std::vector<int64_t> cols = StripBounds(pm, col_parts);
    if (forward) {
      ForwardSteps<F>(p, m, pm, pmx, cols, pool);
    } else {
      std::fill(carry.begin(), carry.end(), F(0));
      BackwardSteps<F>(p, m, pm, cols, carry.data(), pool);
      std::memcpy(p.out2 + m * step, carry.data(), step * sizeof(F));
    }
  }
}

template <typename F>
void Run(const Problem<F>& p, bool forward, int threads, ffi::ThreadPool* pool) {
  if (p.members > 1 && threads > 1) {  // whole members per part
    const int parts = static_cast<int>(std::min<int64_t>(threads, p.members));
    ForkJoin(pool, parts, [&](int part) {
      RunMembers<F>(p, forward, part * p.members / parts, (part + 1) * p.members / parts, 1, pool);
    });
    return;
  }
  const bool split = threads > 1 && p.batch * p.h * p.h >= kMinParallelStep;
  RunMembers<F>(p, forward, 0, p.members, split ? threads : 1, pool);
}

// An operand holds one copy per member or one shared by all (vmap_method="broadcast_all" gives
// the former; the latter is accepted too); anything else is a caller's error.
inline bool Fits(size_t count, int64_t size, int64_t members) {
  return static_cast<int64_t>(count) == size || static_cast<int64_t>(count) == members * size;
}

// At most `threads` parts, and no more than XLA's pool has threads (the caller is one more).
inline int Parts(int64_t threads, ffi::ThreadPool& pool) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, pool.num_threads() + 1)));
}

// The recurrence alone: forward (x = z, y = b, out = hs) or backward (x = hs, y = g, out = δ,
// out2 = ∂L/∂h_0; no h0).
template <typename F>
ffi::Error Dispatch(ffi::AnyBuffer w, ffi::AnyBuffer x, ffi::AnyBuffer y, const void* h0,
                    size_t h0_count, ffi::AnyBuffer mask, bool has_mask, void* out, void* out2,
                    size_t out_count, int64_t act, int64_t threads, bool forward,
                    ffi::ThreadPool& pool) {
  auto d = x.dimensions();
  if (d.size() < 3) return ffi::Error::InvalidArgument("jrnn's CPU kernel: a sequence must be (..., T, B, H)");
  Problem<F> p;
  p.t_len = d[d.size() - 3], p.batch = d[d.size() - 2], p.h = d[d.size() - 1];
  const int64_t seq = p.t_len * p.batch * p.h;
  if (seq == 0) return ffi::Error::Success();
  p.members = static_cast<int64_t>(out_count) / seq;
  const int64_t ysize = forward ? p.h : seq;
  if (p.members * seq != static_cast<int64_t>(out_count) || !Fits(w.element_count(), p.h * p.h, p.members) ||
      !Fits(x.element_count(), seq, p.members) || !Fits(y.element_count(), ysize, p.members) ||
      (forward && !Fits(h0_count, p.batch * p.h, p.members)) ||
      (has_mask && !Fits(mask.element_count(), p.t_len * p.batch, p.members)))
    return ffi::Error::InvalidArgument("jrnn's CPU kernel: operand sizes do not match (..., T, B, H)");
  p.w = static_cast<const F*>(w.untyped_data());
  p.z = static_cast<const F*>(x.untyped_data());
  p.b = static_cast<const F*>(y.untyped_data());
  p.h0 = static_cast<const F*>(h0);
  p.mask = has_mask ? static_cast<const bool*>(mask.untyped_data()) : nullptr;
  p.out = static_cast<F*>(out), p.out2 = static_cast<F*>(out2), p.act = act;
  p.sw = Stride(w.element_count(), p.h * p.h);
  p.sz = Stride(x.element_count(), seq);
  p.sb = Stride(y.element_count(), ysize);
  p.sh0 = Stride(h0_count, p.batch * p.h);
  p.sm = Stride(mask.element_count(), p.t_len * p.batch);
  Run<F>(p, forward, Parts(threads, pool), &pool);
  return ffi::Error::Success();
}

// A whole layer's forward pass: hs (..., T, B, H) from x (..., T, B, I), W_xh (..., H, I),
// W_hh, b, h0 and the mask, without the (T, B, H) array of projected inputs.
template <typename F>
ffi::Error DispatchLayer(ffi::AnyBuffer w, ffi::AnyBuffer wx, ffi::AnyBuffer x, ffi::AnyBuffer b,
                         ffi::AnyBuffer h0, ffi::AnyBuffer mask, bool has_mask,
                         ffi::Result<ffi::AnyBuffer>& hs, int64_t act, int64_t threads,
                         ffi::ThreadPool& pool) {
  auto xd = x.dimensions();
  auto hd = hs->dimensions();
  if (xd.size() < 3 || hd.size() != xd.size())
    return ffi::Error::InvalidArgument("jrnn's CPU kernel: x must be (..., T, B, I)");
  Problem<F> p;
  p.t_len = xd[xd.size() - 3], p.batch = xd[xd.size() - 2], p.n_in = xd[xd.size() - 1];
  p.h = hd[hd.size() - 1];
  const int64_t seq = p.t_len * p.batch * p.h, xseq = p.t_len * p.batch * p.n_in;
  if (seq == 0) return ffi::Error::Success();
  p.members = static_cast<int64_t>(hs->element_count()) / seq;
  const int64_t n = p.members;
  if (!Fits(w.element_count(), p.h * p.h, n) || !Fits(wx.element_count(), p.h * p.n_in, n) ||
      !Fits(x.element_count(), xseq, n) || !Fits(b.element_count(), p.h, n) ||
      !Fits(h0.element_count(), p.batch * p.h, n) ||
      (has_mask && !Fits(mask.element_count(), p.t_len * p.batch, n)))
    return ffi::Error::InvalidArgument("jrnn's CPU kernel: operand sizes do not match a layer");
  p.w = static_cast<const F*>(w.untyped_data());
  p.wx = static_cast<const F*>(wx.untyped_data());
  p.x = static_cast<const F*>(x.untyped_data());
  p.z = nullptr;
  p.b = static_cast<const F*>(b.untyped_data());
  p.h0 = static_cast<const F*>(h0.untyped_data());
  p.mask = has_mask ? static_cast<const bool*>(mask.untyped_data()) : nullptr;
  p.out = static_cast<F*>(hs->untyped_data()), p.out2 = nullptr, p.act = act;
  p.sw = Stride(w.element_count(), p.h * p.h);
  p.swx = Stride(wx.element_count(), p.h * p.n_in);
  p.sx = Stride(x.element_count(), xseq);
  p.sz = 0;
  p.sb = Stride(b.element_count(), p.h);
  p.sh0 = Stride(h0.element_count(), p.batch * p.h);
  p.sm = Stride(mask.element_count(), p.t_len * p.batch);
  Run<F>(p, true, Parts(threads, pool), &pool);
  return ffi::Error::Success();
}

// fn(F{}) for the element type `t`: float32 or float64.
template <typename Fn>
ffi::Error ByDtype(ffi::DataType t, Fn&& fn) {
  if (t == ffi::F32) return fn(float{});
  if (t == ffi::F64) return fn(double{});
  return ffi::Error::InvalidArgument("jrnn's CPU kernel takes float32 or float64");
}

ffi::Error ForwardImpl(ffi::AnyBuffer w, ffi::AnyBuffer z, ffi::AnyBuffer b, ffi::AnyBuffer h0,
                       ffi::AnyBuffer mask, ffi::Result<ffi::AnyBuffer> hs, int64_t act,
                       bool has_mask, int64_t threads, ffi::ThreadPool pool) {
  return ByDtype(z.element_type(), [&](auto zero) {
    return Dispatch<decltype(zero)>(w, z, b, h0.untyped_data(), h0.element_count(), mask, has_mask,
                                    hs->untyped_data(), nullptr, hs->element_count(), act,
                                    threads, true, pool);
  });
}

ffi::Error LayerImpl(ffi::AnyBuffer w, ffi::AnyBuffer wx, ffi::AnyBuffer x, ffi::AnyBuffer b,
                     ffi::AnyBuffer h0, ffi::AnyBuffer mask, ffi::Result<ffi::AnyBuffer> hs,
                     int64_t act, bool has_mask, int64_t threads, ffi::ThreadPool pool) {
  return ByDtype(x.element_type(), [&](auto zero) {
    return DispatchLayer<decltype(zero)>(w, wx, x, b, h0, mask, has_mask, hs, act, threads, pool);
  });
}

ffi::Error BackwardImpl(ffi::AnyBuffer w, ffi::AnyBuffer hs, ffi::AnyBuffer g, ffi::AnyBuffer mask,
                        ffi::Result<ffi::AnyBuffer> delta, ffi::Result<ffi::AnyBuffer> dh0,
                        int64_t act, bool has_mask, int64_t threads, ffi::ThreadPool pool) {
  return ByDtype(g.element_type(), [&](auto zero) {
    return Dispatch<decltype(zero)>(w, hs, g, nullptr, 0, mask, has_mask, delta->untyped_data(),
                                    dh0->untyped_data(), delta->element_count(), act, threads,
                                    false, pool);
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JrnnRnnForward, ForwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // w
                                  .Arg<ffi::AnyBuffer>()  // z
                                  .Arg<ffi::AnyBuffer>()  // b
                                  .Arg<ffi::AnyBuffer>()  // h0
                                  .Arg<ffi::AnyBuffer>()  // mask
                                  .Ret<ffi::AnyBuffer>()  // hs
                                  .Attr<int64_t>("act")
                                  .Attr<bool>("has_mask")
                                  .Attr<int64_t>("threads")
                                  .Ctx<ffi::ThreadPool>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(JrnnRnnBackward, BackwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // w
                                  .Arg<ffi::AnyBuffer>()  // hs
                                  .Arg<ffi::AnyBuffer>()  // g
                                  .Arg<ffi::AnyBuffer>()  // mask
                                  .Ret<ffi::AnyBuffer>()  // delta
                                  .Ret<ffi::AnyBuffer>()  // dh0
                                  .Attr<int64_t>("act")
                                  .Attr<bool>("has_mask")
                                  .Attr<int64_t>("threads")
                                  .Ctx<ffi::ThreadPool>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(JrnnRnnLayerForward, LayerImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // w_hh
                                  .Arg<ffi::AnyBuffer>()  // w_xh
                                  .Arg<ffi::AnyBuffer>()  // x
                                  .Arg<ffi::AnyBuffer>()  // b
                                  .Arg<ffi::AnyBuffer>()  // h0
                                  .Arg<ffi::AnyBuffer>()  // mask
                                  .Ret<ffi::AnyBuffer>()  // hs
                                  .Attr<int64_t>("act")
                                  .Attr<bool>("has_mask")
                                  .Attr<int64_t>("threads")
                                  .Ctx<ffi::ThreadPool>());
