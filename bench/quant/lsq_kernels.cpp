// LSQ fake quantization, forward and backward, one pass each over memory (and the eager gradient sums), one autograd
// node (LSQFn) called once from Python. Every element goes through the IEEE operations of bench/quant/lsq_eager.py in
// the same order; built without floating-point contraction or fast-math, so the results are those of the eager kernels
// bit for bit. Built with -fopenmp: at::parallel_for splits the work over torch's intra-op threads only in an OpenMP
// build.
// Also QDrop's counter-based drop masks (bench/ptq/drop.py): integer arithmetic and selections only; and the input
// gradient of a first conv (bench/quant/fused_conv.py), explicit fused multiply-adds in oneDNN's order.
#include <torch/extension.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ExpandUtils.h>
#include <ATen/Parallel.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <optional>
#include <set>
#include <utility>
#include <vector>

namespace {

// k ? a : b on the bits, without a branch: GCC vectorizes it where it keeps a float `k ? a : b` scalar (trapping math),
// and a branch on QDrop's random masks would be mispredicted half the time
inline float pick(bool k, float a, float b) {
  uint32_t ua, ub;
  std::memcpy(&ua, &a, 4);
  std::memcpy(&ub, &b, 4);
  const uint32_t m = 0u - static_cast<uint32_t>(k);
  const uint32_t r = (ua & m) | (ub & ~m);
  float out;
  std::memcpy(&out, &r, 4);
  return out;
}

// floor(u), bit for bit (checked on all 2^32 floats), in operations GCC vectorizes: with trapping math it keeps
// std::floor scalar (the loops around it too); nearbyint (round half to even) is floor or floor + 1
inline float floorv(float u) {
  const float t = std::nearbyint(u);
  return t - pick(t > u, 1.f, 0.f);
}

template <int M>
inline float rnd(float u) {
  if constexpr (M == 0) {
    return std::nearbyint(u);  // torch.round: half to even (the default rounding mode)
  } else if constexpr (M == 1) {
    return floorv(u + 0.5f);  // floor(u + 1/2)
  } else {
    float sg = u > 0.f ? 1.f : (u < 0.f ? -1.f : 0.f);  // torch.sign(u) * floor(|u| + 1/2)
    return sg * floorv(std::fabs(u) + 0.5f);
  }
}

// torch.clamp(c, lo, hi) with tensor bounds: max, then min; a NaN bound gives NaN (as eager), a NaN c stays NaN
inline float clampf(float c, float lo, float hi) {
  if (lo != lo || hi != hi) return std::numeric_limits<float>::quiet_NaN();
  return std::min(std::max(c, lo), hi);
}

// f(begin, end, channel) over runs of one channel of a [outer, C, inner] tensor, split across torch's threads (the
// channel and the run's end found once per thread's share, then stepped: no integer division per run)
template <class F>
void runs(int64_t n, int64_t C, int64_t inner, const F& f) {
  at::parallel_for(0, n, 16384, [&](int64_t b, int64_t e) {
    if (C == 1) {
      f(b, e, 0);
      return;
    }
    int64_t c = (b / inner) % C, stop = (b / inner + 1) * inner;
    while (b < e) {
      const int64_t s = std::min(e, stop);
      f(b, s, c);
      b = s;
      stop += inner;
      if (++c == C) c = 0;
    }
  });
}

template <int M>
void fwd_impl(const float* x, float* out, const float* r, const float* sb, const float* lo, const float* hi,
              int64_t n, int64_t C, int64_t inner) {
  runs(n, C, inner, [&](int64_t b, int64_t e, int64_t c) {
    const float rc = r[c], sc = sb[c], l = lo[c], h = hi[c];
    for (int64_t i = b; i < e; ++i) out[i] = clampf(rnd<M>(x[i] * rc), l, h) * sc;
  });
}


template <int M, bool ZERO_Z, bool NEED_Z>
void bwd_impl(const float* x, const float* g, float* gx, float* ps, float* pz, const float* r, const float* sb,
              const float* lo, const float* hi, const float* zb, float qmin, float qmax, int64_t n, int64_t C,
              int64_t inner) {
  runs(n, C, inner, [&](int64_t b, int64_t e, int64_t c) {
    const float rc = r[c], sc = sb[c], l = lo[c], h = hi[c], z = zb[c], nsc = -sc;
    const float q0 = qmin, q1 = qmax;  // locals: a captured reference may alias the stores, which keeps loops scalar
    for (int64_t i = b; i < e; ++i) {
      const float u = x[i] * rc;
      const float code = clampf(rnd<M>(u), l, h);
      const float v = ZERO_Z ? u : u + z;
      const bool clipped = (v <= q0) | (v >= q1);
      const float gi = g[i];
      // selections on the bits of values computed for every element: with trapping math (no -ffast-math) the
      // compiler will not turn `clipped ? code : code - u` into a select, and the loop would stay scalar (19x slower)
      gx[i] = pick(clipped, 0.f, gi);
      ps[i] = pick(clipped, code, code - u) * gi;
      if constexpr (NEED_Z) pz[i] = gi * pick(clipped, nsc, 0.f);
    }
  });
}

void check(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == torch::kFloat && t.is_contiguous(), name,
              ": a contiguous float32 CPU tensor is needed");
}

// The grid of one call, per channel (C values; 1 per tensor): r = torch.reciprocal(s) (ATen's, as eager), the
// zero point z_r = clamp(floor(z + 1/2), qmin, qmax) (0 without z), the code bounds qmin - z_r, qmax - z_r; as the
// eager kernel computes them, element by element.
struct Grid {
  std::vector<float> r, sb, lo, hi, zb;
  bool zero_z = true;  // every z_r is 0: v = u + z_r is u, and is not computed (the comparisons see the same values)
};

Grid grid(const torch::Tensor& s, const c10::optional<torch::Tensor>& z, int64_t qmin, int64_t qmax, int64_t C) {
  TORCH_CHECK(s.device().is_cpu() && s.scalar_type() == torch::kFloat && s.numel() == C, "lsq: C float32 steps");
  auto sc = s.contiguous();
  // torch.reciprocal may not be IEEE's 1 / s on every CPU (MKL's vector math serves some unary ops: torch.sqrt is not
  // correctly rounded here): the same ATen op
  auto rc = at::reciprocal(sc);
  const float *ps = sc.data_ptr<float>(), *pr = rc.data_ptr<float>();
  torch::Tensor zc;
  const float* pz = nullptr;
  if (z.has_value()) {
    TORCH_CHECK(z->device().is_cpu() && z->scalar_type() == torch::kFloat && z->numel() == C, "lsq: C zero points");
    zc = z->contiguous();
    pz = zc.data_ptr<float>();
  }
  Grid g;
  g.r.resize(C), g.sb.resize(C), g.lo.resize(C), g.hi.resize(C), g.zb.resize(C);
  const float fmin = static_cast<float>(qmin), fmax = static_cast<float>(qmax);
  for (int64_t c = 0; c < C; ++c) {
    g.sb[c] = ps[c];
    g.r[c] = pr[c];
    // std::max / std::min keep a NaN first argument, as torch.clamp keeps a NaN
    const float zr = pz ? std::min(std::max(floorv(pz[c] + 0.5f), fmin), fmax) : 0.f;
    g.zb[c] = zr;
    g.lo[c] = fmin - zr;
    g.hi[c] = fmax - zr;
    if (zr != 0.f) g.zero_z = false;  // a NaN zero point too: v = u + NaN
  }
  return g;
}

// [outer, C, inner] of a contiguous tensor for the channel axis ch (-1: per tensor, C = 1)
std::pair<int64_t, int64_t> dims(const torch::Tensor& x, int64_t ch) {
  if (ch < 0) return {1, x.numel()};
  int64_t inner = 1;
  for (int64_t d = ch + 1; d < x.dim(); ++d) inner *= x.size(d);
  return {x.size(ch), inner};
}

// x: any contiguous float32 tensor; s (and z): its steps (zero points), 1 per tensor or one per channel along ch
torch::Tensor fwd(torch::Tensor x, torch::Tensor s, c10::optional<torch::Tensor> z, int64_t qmin, int64_t qmax,
                  int64_t mode, int64_t ch) {
  check(x, "lsq fwd");
  const auto [C, inner] = dims(x, ch);
  const Grid g = grid(s, z, qmin, qmax, C);
  auto out = torch::empty_like(x);
  auto args = std::make_tuple(x.data_ptr<float>(), out.data_ptr<float>(), g.r.data(), g.sb.data(), g.lo.data(),
                              g.hi.data(), x.numel(), C, inner);
  if (mode == 0) std::apply(fwd_impl<0>, args);
  else if (mode == 1) std::apply(fwd_impl<1>, args);
  else std::apply(fwd_impl<2>, args);
  return out;
}

template <int M>
void bwd_mode(bool zero_z, bool need_z, const float* x, const float* g, float* gx, float* ps, float* pz,
              const float* r, const float* sb, const float* lo, const float* hi, const float* zb, float qmin,
              float qmax, int64_t n, int64_t C, int64_t inner) {
  if (zero_z && need_z) bwd_impl<M, true, true>(x, g, gx, ps, pz, r, sb, lo, hi, zb, qmin, qmax, n, C, inner);
  else if (zero_z) bwd_impl<M, true, false>(x, g, gx, ps, pz, r, sb, lo, hi, zb, qmin, qmax, n, C, inner);
  else if (need_z) bwd_impl<M, false, true>(x, g, gx, ps, pz, r, sb, lo, hi, zb, qmin, qmax, n, C, inner);
  else bwd_impl<M, false, false>(x, g, gx, ps, pz, r, sb, lo, hi, zb, qmin, qmax, n, C, inner);
}

// (grad_x, grad_s[, grad_z]): the per-element products in one pass, then the eager kernel's reductions (the same
// at::sum over the same dimensions of a tensor of the same layout, so the same summation order), reshaped as s / z
// and times the gradient scale gf (a float scalar, as Python's `tensor * float`)
std::vector<torch::Tensor> bwd(torch::Tensor x, torch::Tensor grad, torch::Tensor s, c10::optional<torch::Tensor> z,
                               int64_t qmin, int64_t qmax, int64_t mode, bool need_z, int64_t ch, double gf) {
  check(x, "lsq bwd");
  check(grad, "lsq bwd");
  TORCH_CHECK(grad.sizes() == x.sizes(), "lsq bwd: grad and x differ in shape");
  TORCH_CHECK(!need_z || z.has_value(), "lsq bwd: a zero point's gradient needs the zero point");
  const auto [C, inner] = dims(x, ch);
  const Grid g = grid(s, z, qmin, qmax, C);
  auto gx = torch::empty_like(x), ps = torch::empty_like(x);
  auto pz = need_z ? torch::empty_like(x) : torch::Tensor();
  float* pzp = need_z ? pz.data_ptr<float>() : nullptr;
  auto args = std::make_tuple(g.zero_z, need_z, x.data_ptr<float>(), grad.data_ptr<float>(), gx.data_ptr<float>(),
                              ps.data_ptr<float>(), pzp, g.r.data(), g.sb.data(), g.lo.data(), g.hi.data(),
                              g.zb.data(), static_cast<float>(qmin), static_cast<float>(qmax), x.numel(), C, inner);
  {
    // the kernels run without the GIL (the caller released it); the sums below are eager ATen ops
    if (mode == 0) std::apply(bwd_mode<0>, args);
    else if (mode == 1) std::apply(bwd_mode<1>, args);
    else std::apply(bwd_mode<2>, args);
  }
  std::vector<int64_t> red;
  for (int64_t d = 0; d < x.dim(); ++d)
    if (d != ch) red.push_back(d);
  auto gs = ps.sum(red).reshape(s.sizes()).mul(gf);
  if (need_z) return {gx, gs, pz.sum(red).reshape(z->sizes()).mul(gf)};
  return {gx, gs};
}

// Strategy 4's BN fold (bench/quant/qmodules.py: QuantConvBn2d.pre_bn) with the ops of its eager form, per channel:
// sigma = sqrt(var + eps) (ATen's), f0 = gamma / sigma, f = (f0 < 0 ? -1 : 1) * max(|f0|, floor). Returns (f, f0, sigma).
std::vector<torch::Tensor> fold_factor(torch::Tensor gamma, torch::Tensor var, double eps, double floor_) {
  check(gamma, "fold factor");
  check(var, "fold factor");
  TORCH_CHECK(gamma.numel() == var.numel(), "fold factor: gamma and var differ in size");
  // torch.sqrt is not IEEE's correctly rounded sqrt on every CPU (a vectorized approximation): the same ATen ops
  auto sigma = at::sqrt(var + eps);
  auto f = torch::empty_like(gamma), f0 = torch::empty_like(gamma);
  const float *g = gamma.data_ptr<float>(), *ps = sigma.data_ptr<float>();
  float *pf = f.data_ptr<float>(), *pf0 = f0.data_ptr<float>();
  const float fl = static_cast<float>(floor_);
  for (int64_t c = 0; c < gamma.numel(); ++c) {
    pf0[c] = g[c] / ps[c];
    const float a = std::fabs(pf0[c]);
    pf[c] = (pf0[c] < 0.f ? -1.f : 1.f) * (a < fl ? fl : a);  // torch.clamp_min keeps a NaN
  }
  return {f, f0, sigma};
}

// autograd's chain back through fold_factor to gamma: mul (by the +-1 sign), clamp_min (g where |f0| > floor, else 0:
// strict, as torch's backward is at the bound), abs (g * sgn(f0)), div (g / sigma)
torch::Tensor fold_factor_grad(torch::Tensor grad, torch::Tensor f0, torch::Tensor sigma, double floor_) {
  check(grad, "fold factor grad");
  TORCH_CHECK(grad.numel() == f0.numel() && f0.numel() == sigma.numel(), "fold factor grad: sizes differ");
  auto out = torch::empty_like(f0);
  const float *g = grad.data_ptr<float>(), *pf0 = f0.data_ptr<float>(), *ps = sigma.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const float fl = static_cast<float>(floor_);
  for (int64_t c = 0; c < f0.numel(); ++c) {
    const float x = pf0[c];
    const float gm = g[c] * (x < 0.f ? -1.f : 1.f);
    const float ga = std::fabs(x) > fl ? gm : 0.f;
    const float sgn = x > 0.f ? 1.f : (x < 0.f ? -1.f : 0.f);
    o[c] = ga * sgn / ps[c];
  }
  return out;
}

// strategy 4's division by f per channel of y [N, C, H, W], backward: (grad / f, (z / f) * grad) with z = y / f the
// forward's output, in one pass; the caller sums the second over (N, H, W) as autograd's div does
std::vector<torch::Tensor> div_channels_grad(torch::Tensor grad, torch::Tensor z, torch::Tensor f) {
  check(grad, "div channels grad");
  check(z, "div channels grad");
  check(f, "div channels grad");
  TORCH_CHECK(grad.sizes() == z.sizes() && z.dim() == 4 && f.numel() == z.size(1), "div channels grad: shapes");
  auto gy = torch::empty_like(grad), prod = torch::empty_like(grad);
  const int64_t C = z.size(1), inner = z.size(2) * z.size(3);
  const float *pg = grad.data_ptr<float>(), *pz = z.data_ptr<float>(), *pf = f.data_ptr<float>();
  float *ogy = gy.data_ptr<float>(), *op = prod.data_ptr<float>();
  if (inner < 64) {
    // short runs (4x4, 2x2 maps): the factors repeated over one sample's C x inner elements, so that the loop over a
    // whole sample vectorizes (each element divided by its channel's factor, as below)
    const int64_t row = C * inner;
    std::vector<float> fr(row);
    for (int64_t j = 0; j < row; ++j) fr[j] = pf[j / inner];
    const float* pr = fr.data();
    at::parallel_for(0, z.size(0), std::max<int64_t>(1, 16384 / std::max<int64_t>(row, 1)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const int64_t o = r * row;
        for (int64_t j = 0; j < row; ++j) {
          ogy[o + j] = pg[o + j] / pr[j];
          op[o + j] = (pz[o + j] / pr[j]) * pg[o + j];
        }
      }
    });
    return {gy, prod};
  }
  runs(z.numel(), C, inner, [&](int64_t b, int64_t e, int64_t c) {
    const float fc = pf[c];
    for (int64_t i = b; i < e; ++i) {
      ogy[i] = pg[i] / fc;
      op[i] = (pz[i] / fc) * pg[i];
    }
  });
  return {gy, prod};
}

// strategy 4's division by f followed by a training-mode BN, backward in one node: ATen's BN backward (its contiguous
// kernel: per channel, per sample plane a vector reduction of dy and of (x - mean) * dy in W float lanes, the planes
// added in double; dx = (dy - grad_mean - (x - mean) k) invstd w) then the division's (dx / f, (z / f) dx), without
// writing dx. Replays the order of the torch build on this machine, as bench/quant/fused_divbn.py checks it: W = 8 lanes
// (ATen serves this kernel at AVX2 width on AVX-512 machines), lanes added without contraction but the tail with a
// fused multiply-add, horizontal sums as a halving tree, dx's subtraction a fused multiply-add. Checked against ATen
// where it is used; planes of one pixel (ATen's channels-last kernel) are not served.
namespace bnd {
template <int W>
inline float tree(float* a) {
  for (int h = W / 2; h >= 1; h /= 2)
    for (int j = 0; j < h; ++j) a[j] = a[j] + a[j + h];
  return a[0];
}

// vec::reduce_all(+) over one plane
template <int W>
inline float plane_sum(const float* p, int64_t n) {
  if (n < W) {
    float acc = p[0];
    for (int64_t i = 1; i < n; ++i) acc = acc + p[i];
    return acc;
  }
  float a[W];
  for (int l = 0; l < W; ++l) a[l] = p[l];
  int64_t d = W;
  for (; d < n - (n % W); d += W)
    for (int l = 0; l < W; ++l) a[l] = a[l] + p[d + l];
  for (int64_t l = 0; l < n - d; ++l) a[l] = a[l] + p[d + l];
  return tree<W>(a);
}

// vec::map2_reduce_all((x - mean) * dy, +) over one plane
template <int W>
inline float plane_dot(const float* x, const float* dy, float mean, int64_t n) {
  if (n < W) {
    float acc = (x[0] - mean) * dy[0];
    for (int64_t i = 1; i < n; ++i) acc = acc + (x[i] - mean) * dy[i];
    return acc;
  }
  float a[W];
  for (int l = 0; l < W; ++l) a[l] = (x[l] - mean) * dy[l];
  int64_t d = W;
  for (; d < n - (n % W); d += W)
    for (int l = 0; l < W; ++l) a[l] = a[l] + (x[d + l] - mean) * dy[d + l];
  for (int64_t l = 0; l < n - d; ++l) a[l] = std::fma(x[d + l] - mean, dy[d + l], a[l]);
  return tree<W>(a);
}

template <int W>
std::vector<torch::Tensor> grad(const torch::Tensor& dy, const torch::Tensor& z, const torch::Tensor& f,
                                const torch::Tensor& w, const torch::Tensor& mean, const torch::Tensor& invstd) {
  const int64_t B = z.size(0), C = z.size(1), HW = z.numel() / (B * C), N = z.numel() / C;
  auto gy = torch::empty_like(z), prod = torch::empty_like(z);
  auto gw = torch::empty({C}, z.options()), gb = torch::empty({C}, z.options());
  const float *pdy = dy.data_ptr<float>(), *pz = z.data_ptr<float>(), *pf = f.data_ptr<float>(),
              *pw = w.data_ptr<float>(), *pm = mean.data_ptr<float>(), *pi = invstd.data_ptr<float>();
  float *ogy = gy.data_ptr<float>(), *op = prod.data_ptr<float>(), *ogw = gw.data_ptr<float>(),
        *ogb = gb.data_ptr<float>();
  at::parallel_for(0, C, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      const float m = pm[c], is = pi[c], wc = pw[c], fc = pf[c];
      double sum = 0, dotp = 0;
      for (int64_t b = 0; b < B; ++b) {
        const int64_t o = (b * C + c) * HW;
        sum += plane_sum<W>(pdy + o, HW);
        dotp += plane_dot<W>(pz + o, pdy + o, m, HW);
      }
      const float k = static_cast<float>(dotp) * is * is / static_cast<float>(N);
      const float gm = static_cast<float>(sum / static_cast<double>(N));
      for (int64_t b = 0; b < B; ++b) {
        const int64_t o = (b * C + c) * HW;
        for (int64_t i = o; i < o + HW; ++i) {
          const float x = pz[i];
          const float g = std::fma(-(x - m), k, pdy[i] - gm) * is * wc;
          ogy[i] = g / fc;
          op[i] = (x / fc) * g;
        }
      }
      ogw[c] = static_cast<float>(dotp * static_cast<double>(is));
      ogb[c] = static_cast<float>(sum);
    }
  });
  return {gy, prod, gw, gb};
}
}  // namespace bnd

// (grad of y, (z / f) * dx to be summed for f, grad of BN's weight, of its bias) for out = BN(z), z = y / f
std::vector<torch::Tensor> div_bn_grad(torch::Tensor dy, torch::Tensor z, torch::Tensor f, torch::Tensor w,
                                       torch::Tensor mean, torch::Tensor invstd, int64_t width) {
  for (const auto* t : {&dy, &z, &f, &w, &mean, &invstd}) check(*t, "div bn grad");
  TORCH_CHECK(z.dim() == 4 && dy.sizes() == z.sizes() && z.size(2) * z.size(3) > 1 && z.numel() > 0,
              "div bn grad: shapes");
  const int64_t C = z.size(1);
  TORCH_CHECK(f.numel() == C && w.numel() == C && mean.numel() == C && invstd.numel() == C, "div bn grad: channels");
  TORCH_CHECK(width == 8 || width == 16, "div bn grad: width 8 or 16");
  return width == 8 ? bnd::grad<8>(dy, z, f, w, mean, invstd) : bnd::grad<16>(dy, z, f, w, mean, invstd);
}

// input gradient of a conv with one input channel (groups 1, dilation 1, zero padding), for the learned step of the
// quantizer in front of a network's first conv: per input pixel one fused multiply-add chain per kernel column kw over
// (kh ascending, output channel ascending), the chains added in kw order: oneDNN's order where bench/quant/fused_conv.py
// has checked it against ATen for the shape (a strided 3x3 conv on AVX-512). Latency-bound chains: NB samples at a
// time, so that NB independent chains are in flight.
namespace conv1 {
constexpr int64_t NB = 4, V = 16;

struct Geo {
  int64_t N, OC, OH, OW, KH, KW, H, W, sh, sw, ph, pw;
};

// chains of samples n0 .. n0 + nb - 1 for input row ih, kernel column kw, output columns ow = j + d, j in [j0, j1),
// written to chain[s * cw + j]
template <int64_t B>
void chains(const Geo& g, const float* pg, const float* pw, int64_t n0, int64_t ih, int64_t kw, int64_t d,
            int64_t j0, int64_t j1, const int64_t* khs, int64_t nkh, float* chain, int64_t cw) {
  const int64_t plane = g.OH * g.OW;
  auto run = [&](int64_t jb, auto len_c) {
    constexpr int64_t L = decltype(len_c)::value;
    float acc[B][V];
    for (int64_t s = 0; s < B; ++s)
      for (int64_t l = 0; l < V; ++l) acc[s][l] = 0.f;
    for (int64_t q = 0; q < nkh; ++q) {
      const int64_t kh = khs[q], oh = (ih + g.ph - kh) / g.sh;
      const float* base = pg + (n0 * g.OC * g.OH + oh) * g.OW + d + jb;
      for (int64_t oc = 0; oc < g.OC; ++oc) {
        const float wv = pw[(oc * g.KH + kh) * g.KW + kw];
        const float* row = base + oc * plane;
        for (int64_t s = 0; s < B; ++s) {
          const float* r = row + s * g.OC * plane;
          for (int64_t l = 0; l < L; ++l) acc[s][l] = std::fma(wv, r[l], acc[s][l]);
        }
      }
    }
    for (int64_t s = 0; s < B; ++s)
      for (int64_t l = 0; l < L; ++l) chain[s * cw + jb + l] = acc[s][l];
  };
  // blocks of 16 columns, the last one overlapping the block before (the same values again); ranges shorter than
  // 16 in blocks of 8 and 4 the same way; under 4, one column at a time
  const int64_t n = j1 - j0;
  auto blocks = [&](auto width) {
    constexpr int64_t L = decltype(width)::value;
    int64_t jb = j0;
    for (; jb + L <= j1; jb += L) run(jb, width);
    if (jb < j1) run(j1 - L, width);
  };
  if (n >= 16) {
    blocks(std::integral_constant<int64_t, 16>{});
  } else if (n >= 8) {
    blocks(std::integral_constant<int64_t, 8>{});
  } else if (n >= 4) {
    blocks(std::integral_constant<int64_t, 4>{});
  } else {
    for (int64_t jb = j0; jb < j1; ++jb) run(jb, std::integral_constant<int64_t, 1>{});
  }
}
}  // namespace conv1

torch::Tensor conv1_input_grad(torch::Tensor grad, torch::Tensor w, int64_t H, int64_t W, int64_t sh, int64_t sw,
                               int64_t ph, int64_t pw) {
  TORCH_CHECK(grad.dim() == 4 && w.dim() == 4 && w.size(1) == 1 && w.size(0) == grad.size(1) && sh > 0 && sw > 0,
              "conv1 input grad: shapes");
  grad = grad.contiguous();
  w = w.contiguous();
  using conv1::NB;
  const conv1::Geo g{grad.size(0), grad.size(1), grad.size(2), grad.size(3), w.size(2), w.size(3), H, W, sh, sw, ph, pw};
  auto out = torch::empty({g.N, 1, H, W}, grad.options());
  const float *pg = grad.data_ptr<float>(), *pwt = w.data_ptr<float>();
  float* po = out.data_ptr<float>();
  const int64_t nblocks = (g.N + NB - 1) / NB, cw = (W + sw - 1) / sw;
  at::parallel_for(0, H * nblocks, 1, [&](int64_t b, int64_t e) {
    std::vector<float> chain(NB * cw), total(NB * cw);
    std::vector<int64_t> khs(g.KH);
    for (int64_t task = b; task < e; ++task) {
      const int64_t ih = task / nblocks, n0 = (task % nblocks) * NB, nb = std::min(NB, g.N - n0);
      int64_t nkh = 0;  // the kernel rows that reach input row ih, ascending
      for (int64_t kh = 0; kh < g.KH; ++kh) {
        const int64_t th = ih + ph - kh;
        if (th >= 0 && th % sh == 0 && th / sh < g.OH) khs[nkh++] = kh;
      }
      for (int64_t res = 0; res < std::min(sw, W); ++res) {
        const int64_t nj = (W - res + sw - 1) / sw;  // input columns iw = res + sw * j
        bool first = true;
        for (int64_t kw = 0; kw < g.KW; ++kw) {
          const int64_t t = res + pw - kw;  // kernel column kw reaches them where t % sw == 0, at ow = j + t / sw
          if (((t % sw) + sw) % sw != 0) continue;
          const int64_t d = t >= 0 ? t / sw : -((-t) / sw);
          const int64_t j0 = std::max<int64_t>(0, -d), j1 = std::min<int64_t>(nj, g.OW - d);
          for (int64_t i = 0; i < NB * cw; ++i) chain[i] = 0.f;
          if (j0 < j1) {
            if (nb == NB) {
              conv1::chains<NB>(g, pg, pwt, n0, ih, kw, d, j0, j1, khs.data(), nkh, chain.data(), cw);
            } else {
              for (int64_t s = 0; s < nb; ++s)
                conv1::chains<1>(g, pg, pwt, n0 + s, ih, kw, d, j0, j1, khs.data(), nkh, chain.data() + s * cw, cw);
            }
          }
          for (int64_t s = 0; s < nb; ++s)
            for (int64_t j = 0; j < nj; ++j)
              total[s * cw + j] = first ? chain[s * cw + j] : total[s * cw + j] + chain[s * cw + j];
          first = false;
        }
        for (int64_t s = 0; s < nb; ++s) {
          float* orow = po + ((n0 + s) * H + ih) * W;
          for (int64_t j = 0; j < nj; ++j) orow[res + sw * j] = first ? 0.f : total[s * cw + j];
        }
      }
    }
  });
  return out;
}

// PACT's activation quantizer (bench/algos/pact.py), forward: the clip where(x >= hi, hi, where(x <= lo, lo, x)), the
// fake quantization of the clipped value, and the straight-through sum y + (q - y). M = 0: rounding half to even with
// torch.fake_quantize_per_tensor_affine's CPU arithmetic (z + nearbyint(y * (1 / s)), clamped with fmax / fmin, which
// take the bound for a NaN: NaN and -inf give qmin; the integer code times s, so a code of 0 gives +0); M = 1, 2: the
// eager formula of bench/quant/fake.py (clamp(round(y * (1 / s)) + z, qmin, qmax) - z) * s, NaN kept.
// V selects the output: 0 PACT's y + (q - y); 1 fake.py's fake_quantize of a y that needs a gradient (inside the grid
// y + (q - y), else q); 2 the fake-quantized q itself (DoReFa's activations: torch's fake quantization, or fake.py's
// without a gradient).
template <int M, int V>
void pact_fwd_impl(const float* x, float* out, float lo, float hi, float s, float z, float inv, float qmin,
                   float qmax, int64_t n) {
  at::parallel_for(0, n, 16384, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const float xi = x[i];
      const float y = pick(xi >= hi, hi, pick(xi <= lo, lo, xi));
      float q, t;
      if constexpr (M == 0) {
        t = z + std::nearbyint(y * inv);
        const float c = t > qmin ? t : qmin;
        const float d = c < qmax ? c : qmax;
        q = ((d - z) + 0.f) * s;
      } else {
        t = rnd<M>(y * inv) + z;
        q = (std::min(std::max(t, qmin), qmax) - z) * s;
      }
      if constexpr (V == 0) {
        out[i] = y + (q - y);
      } else if constexpr (V == 1) {
        out[i] = pick((t >= qmin) & (t <= qmax), y + (q - y), q);
      } else {
        out[i] = q;
      }
    }
  });
}

template <int V>
void pact_fwd_mode(int64_t mode, const float* x, float* out, float lo, float hi, float s, float z, float inv,
                   float qmin, float qmax, int64_t n) {
  if (mode == 0) pact_fwd_impl<0, V>(x, out, lo, hi, s, z, inv, qmin, qmax, n);
  else if (mode == 1) pact_fwd_impl<1, V>(x, out, lo, hi, s, z, inv, qmin, qmax, n);
  else pact_fwd_impl<2, V>(x, out, lo, hi, s, z, inv, qmin, qmax, n);
}

// inv: 1 / s as the eager op computes it (torch's fake quantization: a float division; fake.py: torch.reciprocal)
torch::Tensor pact_fwd(torch::Tensor x, double lo, double hi, double s, double z, double inv, int64_t qmin,
                       int64_t qmax, int64_t mode, int64_t out_kind) {
  check(x, "pact fwd");
  TORCH_CHECK(out_kind >= 0 && out_kind <= 2, "pact fwd: output kind ", out_kind, " not in 0..2");
  auto out = torch::empty_like(x);
  auto args = std::make_tuple(mode, x.data_ptr<float>(), out.data_ptr<float>(), static_cast<float>(lo),
                              static_cast<float>(hi), static_cast<float>(s), static_cast<float>(z),
                              static_cast<float>(inv), static_cast<float>(qmin), static_cast<float>(qmax), x.numel());
  if (out_kind == 0) std::apply(pact_fwd_mode<0>, args);
  else if (out_kind == 1) std::apply(pact_fwd_mode<1>, args);
  else std::apply(pact_fwd_mode<2>, args);
  return out;
}

// DoReFa's activation quantizer, backward: the fake quantization's gradient on the clipped y (M = 0, torch's: grad
// times its mask, 1.0 or 0.0, so -0 and NaN follow the product; M = 1, 2, fake.py's: where(inside, g, 0)), then the
// clip's two where's as autograd gives them
template <int M>
void clipq_bwd_impl(const float* x, const float* g, float* gx, float lo, float hi, float z, float inv, float qmin,
                    float qmax, int64_t n) {
  at::parallel_for(0, n, 16384, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const float xi = x[i];
      const bool c1 = xi >= hi, c2 = xi <= lo;
      const float y = pick(c1, hi, pick(c2, lo, xi));
      const float t = M == 0 ? z + std::nearbyint(y * inv) : rnd<M>(y * inv) + z;
      const bool inside = (t >= qmin) & (t <= qmax);
      const float gy = M == 0 ? g[i] * pick(inside, 1.f, 0.f) : pick(inside, g[i], 0.f);
      gx[i] = pick(c2, 0.f, pick(c1, 0.f, gy));
    }
  });
}

torch::Tensor clipq_bwd(torch::Tensor x, torch::Tensor grad, double lo, double hi, double z, double inv,
                        int64_t qmin, int64_t qmax, int64_t mode) {
  check(x, "clip-quantize bwd");
  check(grad, "clip-quantize bwd");
  TORCH_CHECK(grad.sizes() == x.sizes(), "clip-quantize bwd: grad and x differ in shape");
  auto gx = torch::empty_like(x);
  auto args = std::make_tuple(x.data_ptr<float>(), grad.data_ptr<float>(), gx.data_ptr<float>(),
                              static_cast<float>(lo), static_cast<float>(hi), static_cast<float>(z),
                              static_cast<float>(inv), static_cast<float>(qmin), static_cast<float>(qmax), x.numel());
  if (mode == 0) std::apply(clipq_bwd_impl<0>, args);
  else if (mode == 1) std::apply(clipq_bwd_impl<1>, args);
  else std::apply(clipq_bwd_impl<2>, args);
  return gx;
}

// which outputs a loop writes is a template argument: with a run-time test per element GCC keeps the loop scalar
template <bool LO, bool HI>
void pact_bwd_impl(const float* px, const float* pg, float* ogx, float* olo, float* ohi, float l, float h, int64_t n) {
  at::parallel_for(0, n, 16384, [=](int64_t b, int64_t e) {
    // locals: through the closure (a captured reference, or a member) the stores may alias the bounds, which keeps
    // the loop scalar
    const float *x_ = px, *g_ = pg;
    float *gx_ = ogx, *lo_ = olo, *hi_ = ohi;
    const float lv = l, hv = h;
    for (int64_t i = b; i < e; ++i) {
      const bool c1 = x_[i] >= hv, c2 = x_[i] <= lv;
      const float g = g_[i];
      const float inner = pick(c1, 0.f, g);  // the outer where's gradient to its other branch
      gx_[i] = pick(c2, 0.f, inner);
      if constexpr (LO) lo_[i] = pick(c2, inner, 0.f);
      if constexpr (HI) hi_[i] = pick(c1, g, 0.f);
    }
  });
}

// PACT's backward: the two where's of the clip as autograd gives them (where(c, g, 0) / where(c, 0, g)), the gradients
// of hi and lo reduced to their shapes with at::sum_to, as autograd reduces a broadcast input's gradient
std::vector<torch::Tensor> pact_bwd(torch::Tensor x, torch::Tensor grad, double lo, double hi,
                                    std::vector<int64_t> lo_shape, std::vector<int64_t> hi_shape, bool need_lo,
                                    bool need_hi) {
  check(x, "pact bwd");
  check(grad, "pact bwd");
  TORCH_CHECK(grad.sizes() == x.sizes(), "pact bwd: grad and x differ in shape");
  auto gx = torch::empty_like(x);
  auto glo = need_lo ? torch::empty_like(x) : torch::Tensor();
  auto ghi = need_hi ? torch::empty_like(x) : torch::Tensor();
  const float *px = x.data_ptr<float>(), *pg = grad.data_ptr<float>();
  float *ogx = gx.data_ptr<float>(), *olo = need_lo ? glo.data_ptr<float>() : nullptr;
  float* ohi = need_hi ? ghi.data_ptr<float>() : nullptr;
  const float l = static_cast<float>(lo), h = static_cast<float>(hi);
  auto args = std::make_tuple(px, pg, ogx, olo, ohi, l, h, x.numel());
  if (need_lo && need_hi) std::apply(pact_bwd_impl<true, true>, args);
  else if (need_lo) std::apply(pact_bwd_impl<true, false>, args);
  else if (need_hi) std::apply(pact_bwd_impl<false, true>, args);
  else std::apply(pact_bwd_impl<false, false>, args);
  std::vector<torch::Tensor> res{gx};
  res.push_back(need_lo ? at::sum_to(glo, lo_shape) : torch::Tensor());
  res.push_back(need_hi ? at::sum_to(ghi, hi_shape) : torch::Tensor());
  return res;
}

// DSQ (bench/algos/dsq.py): u0 = x * r, u = clamp(u0 + z, qmin, qmax), phi = (floor(u) + cf * tanh(k * ((u - floor(u))
// - 0.5))) + 0.5, hard = clamp(round(u0) + z, qmin, qmax), out = ((phi + (hard - phi)) - z) * s; per channel (r, s, z:
// C values) or per tensor. The tanh and its backward stay ATen's (tanh, tanh_backward: vectorized, not correctly
// rounded, so not rewritten here); the passes around them are fused.
void dsq_arg_impl(const float* x, float* arg, const float* r, const float* zb, float qmin, float qmax, float k,
                  int64_t n, int64_t C, int64_t inner) {
  runs(n, C, inner, [&](int64_t b, int64_t e, int64_t c) {
    const float rc = r[c], z = zb[c];
    for (int64_t i = b; i < e; ++i) {
      const float u = std::min(std::max(x[i] * rc + z, qmin), qmax);
      const float fl = floorv(u);
      arg[i] = k * ((u - fl) - 0.5f);
    }
  });
}

template <int M>
void dsq_out_impl(const float* x, const float* t, float* out, const float* r, const float* sb, const float* zb,
                  float qmin, float qmax, float cf, int64_t n, int64_t C, int64_t inner) {
  runs(n, C, inner, [&](int64_t b, int64_t e, int64_t c) {
    const float rc = r[c], sc = sb[c], z = zb[c];
    for (int64_t i = b; i < e; ++i) {
      const float u0 = x[i] * rc;
      const float u = std::min(std::max(u0 + z, qmin), qmax);
      const float phi = (floorv(u) + cf * t[i]) + 0.5f;
      const float hard = std::min(std::max(rnd<M>(u0) + z, qmin), qmax);
      out[i] = ((phi + (hard - phi)) - z) * sc;
    }
  });
}

// the gradient of x: ((tanh_backward((g * s) * cf, t) * k) + 0) where qmin < u0 + z < qmax (clamp's mask, else 0),
// times r; floor's zero gradient is added to u's as autograd accumulates it (so -0 becomes +0)
void dsq_gt_impl(const float* g, float* gt, const float* sb, float cf, int64_t n, int64_t C, int64_t inner) {
  runs(n, C, inner, [&](int64_t b, int64_t e, int64_t c) {
    const float sc = sb[c];
    for (int64_t i = b; i < e; ++i) gt[i] = (g[i] * sc) * cf;
  });
}

void dsq_gx_impl(const float* x, const float* ga, float* gx, const float* r, const float* zb, float qmin, float qmax,
                 float k, int64_t n, int64_t C, int64_t inner) {
  runs(n, C, inner, [&](int64_t b, int64_t e, int64_t c) {
    const float rc = r[c], z = zb[c];
    for (int64_t i = b; i < e; ++i) {
      const float v = x[i] * rc + z;
      const bool inside = (v > qmin) & (v < qmax);  // torch's clamp with number bounds: 0 at the bounds too
      gx[i] = pick(inside, ga[i] * k + 0.f, 0.f) * rc;
    }
  });
}

std::vector<float> per_channel(const torch::Tensor& t, int64_t C, const char* name) {
  auto c = t.detach().to(torch::kFloat).contiguous().reshape({-1});
  TORCH_CHECK(c.numel() == C || c.numel() == 1, name, ": ", c.numel(), " values for ", C, " channels");
  const float* p = c.data_ptr<float>();
  std::vector<float> v(C);
  for (int64_t i = 0; i < C; ++i) v[i] = p[c.numel() == 1 ? 0 : i];
  return v;
}

// r: the eager reciprocal of s (computed by the caller with torch); returns {out, t} (t saved for backward)
std::vector<torch::Tensor> dsq_fwd(torch::Tensor x, torch::Tensor r, torch::Tensor s, torch::Tensor z, int64_t qmin,
                                   int64_t qmax, double k, double cf, int64_t mode, int64_t ch) {
  check(x, "dsq fwd");
  const auto [C, inner] = dims(x, ch);
  const auto rv = per_channel(r, C, "dsq fwd r"), sv = per_channel(s, C, "dsq fwd s");
  const auto zv = per_channel(z, C, "dsq fwd z");
  const float lo = static_cast<float>(qmin), hi = static_cast<float>(qmax);
  auto arg = torch::empty_like(x);
  {
    dsq_arg_impl(x.data_ptr<float>(), arg.data_ptr<float>(), rv.data(), zv.data(), lo, hi, static_cast<float>(k),
                 x.numel(), C, inner);
  }
  auto t = at::tanh(arg);
  auto out = torch::empty_like(x);
  auto args = std::make_tuple(x.data_ptr<float>(), t.data_ptr<float>(), out.data_ptr<float>(), rv.data(), sv.data(),
                              zv.data(), lo, hi, static_cast<float>(cf), x.numel(), C, inner);
  {
    if (mode == 0) std::apply(dsq_out_impl<0>, args);
    else if (mode == 1) std::apply(dsq_out_impl<1>, args);
    else std::apply(dsq_out_impl<2>, args);
  }
  return {out, t};
}

torch::Tensor dsq_bwd(torch::Tensor x, torch::Tensor t, torch::Tensor grad, torch::Tensor r, torch::Tensor s,
                      torch::Tensor z, int64_t qmin, int64_t qmax, double k, double cf, int64_t ch) {
  check(x, "dsq bwd");
  check(t, "dsq bwd");
  check(grad, "dsq bwd");
  TORCH_CHECK(grad.sizes() == x.sizes() && t.sizes() == x.sizes(), "dsq bwd: grad, t and x differ in shape");
  const auto [C, inner] = dims(x, ch);
  const auto rv = per_channel(r, C, "dsq bwd r"), sv = per_channel(s, C, "dsq bwd s");
  const auto zv = per_channel(z, C, "dsq bwd z");
  auto gt = torch::empty_like(x);
  {
    dsq_gt_impl(grad.data_ptr<float>(), gt.data_ptr<float>(), sv.data(), static_cast<float>(cf), x.numel(), C, inner);
  }
  auto ga = at::tanh_backward(gt, t);
  auto gx = torch::empty_like(x);
  {
    dsq_gx_impl(x.data_ptr<float>(), ga.data_ptr<float>(), gx.data_ptr<float>(), rv.data(), zv.data(),
                static_cast<float>(qmin), static_cast<float>(qmax), static_cast<float>(k), x.numel(), C, inner);
  }
  return gx;
}

// APoT (bench/algos/apot.py): v = x / a, u = clamp(v, lo, 1), p = levels[bucketize(|u|, mids)] * sign(u),
// out = (u + (p - u)) * a. bucketize(right=False) is the number of mids below |u| (NaN: all of them, as torch's):
// counted over blocks of elements, one mid at a time (vectorized), or for long level lists (8 bits) by a branch-free
// binary search per element; torch.sign gives 0 for NaN and +0 for -0.
constexpr int64_t kBlock = 256;
constexpr int64_t kLinearMids = 48;  // up to this many mids, counting beats a search

#if defined(__AVX512F__)
// the same counts for up to 31 sorted mids held in one or two vector registers: a branch-free binary search per
// 16 elements, each probe an in-register permute (no memory gather); NaN |u| counts all m mids, as above. Returns
// how many elements it did (whole vectors); the caller counts the rest
int64_t apot_idx_perm(const float* au, int32_t* idx, int64_t len, const float* mids, int64_t m) {
  alignas(64) float t[32];
  for (int j = 0; j < 32; ++j) t[j] = j < m ? mids[j] : std::numeric_limits<float>::infinity();
  const __m512 lo = _mm512_load_ps(t), hi = _mm512_load_ps(t + 16);
  const bool two = m > 15;
  const __m512i all = _mm512_set1_epi32(static_cast<int32_t>(m));
  int64_t k = 0;
  for (; k + 16 <= len; k += 16) {
    const __m512 a = _mm512_loadu_ps(au + k);
    __m512i id = _mm512_setzero_si512();
    for (int step = two ? 16 : 8; step >= 1; step /= 2) {
      const __m512i probe = _mm512_add_epi32(id, _mm512_set1_epi32(step - 1));
      const __m512 mv = two ? _mm512_permutex2var_ps(lo, probe, hi) : _mm512_permutexvar_ps(probe, lo);
      id = _mm512_mask_add_epi32(id, _mm512_cmp_ps_mask(mv, a, _CMP_LT_OQ), id, _mm512_set1_epi32(step));
    }
    id = _mm512_mask_mov_epi32(id, _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q), all);
    _mm512_storeu_si512(idx + k, id);
  }
  return k;
}
#endif

// sorted and free of NaN (a NaN mid counts differently in a search than in the count)
bool sorted_mids(const float* mids, int64_t m) {
  for (int64_t j = 0; j < m; ++j)
    if (!(mids[j] == mids[j]) || (j > 0 && !(mids[j - 1] <= mids[j]))) return false;
  return true;
}

void apot_idx(const float* au, int32_t* idx, int64_t len, const float* mids, int64_t m) {
#if defined(__AVX512F__)
  if (m <= 31 && sorted_mids(mids, m)) {
    const int64_t done = apot_idx_perm(au, idx, len, mids, m);
    au += done, idx += done, len -= done;  // the tail (under 16 elements) as below
  }
#endif
  if (m <= kLinearMids) {
    for (int64_t k = 0; k < len; ++k) idx[k] = 0;
    for (int64_t j = 0; j < m; ++j) {
      const float mj = mids[j];
      for (int64_t k = 0; k < len; ++k) idx[k] += static_cast<int32_t>(!(mj >= au[k]));  // mj < |u|, or |u| NaN
    }
    return;
  }
  for (int64_t k = 0; k < len; ++k) {
    const float* base = mids;
    int64_t n = m;
    while (n > 1) {
      const int64_t half = n / 2;
      base = !(base[half] >= au[k]) ? base + half : base;
      n -= half;
    }
    idx[k] = static_cast<int32_t>((base - mids) + static_cast<int64_t>(!(base[0] >= au[k])));
  }
}

inline float sign_of(float u) { return pick(0.f < u, 1.f, 0.f) - pick(u < 0.f, 1.f, 0.f); }

// the straight-through value u + (p - u) of a block, p = the nearest level of |u| with u's sign (au: |u| on entry)
void apot_ste(const float* u, float* au, int32_t* idx, int64_t len, const float* mids, int64_t m,
              const float* levels) {
  apot_idx(au, idx, len, mids, m);
  int64_t k0 = 0;
#if defined(__AVX512F__)
  if (m <= 31) {  // the m + 1 <= 32 levels in two registers: an in-register permute instead of a memory gather
    alignas(64) float t[32];
    for (int j = 0; j < 32; ++j) t[j] = j <= m ? levels[j] : 0.f;
    const __m512 l0 = _mm512_load_ps(t), l1 = _mm512_load_ps(t + 16);
    for (; k0 + 16 <= len; k0 += 16) {
      const __m512i id = _mm512_loadu_si512(idx + k0);
      _mm512_storeu_ps(au + k0, _mm512_permutex2var_ps(l0, id, l1));
    }
  }
#endif
  for (int64_t k = k0; k < len; ++k) au[k] = levels[idx[k]];  // the level (a gather)
  for (int64_t k = 0; k < len; ++k) {
    const float p = au[k] * sign_of(u[k]);
    au[k] = u[k] + (p - u[k]);
  }
}

// f(begin, end) over blocks of at most kBlock elements, split across torch's threads
template <class F>
void apot_blocks(int64_t n, const F& f) {
  at::parallel_for(0, n, 16384, [&](int64_t b, int64_t e) {
    for (int64_t s = b; s < e; s += kBlock) f(s, std::min(e, s + kBlock));
  });
}

torch::Tensor apot_fwd(torch::Tensor x, double a, double lo, torch::Tensor mids, torch::Tensor levels) {
  check(x, "apot fwd");
  check(mids, "apot fwd mids");
  check(levels, "apot fwd levels");
  TORCH_CHECK(levels.numel() == mids.numel() + 1, "apot fwd: one level more than mids is needed");
  auto out = torch::empty_like(x);
  const float *px = x.data_ptr<float>(), *pm = mids.data_ptr<float>(), *pl = levels.data_ptr<float>();
  float* po = out.data_ptr<float>();
  const float af = static_cast<float>(a), l = static_cast<float>(lo);
  const int64_t m = mids.numel();
  apot_blocks(x.numel(), [&](int64_t b, int64_t e) {
    float u[kBlock], au[kBlock];
    int32_t idx[kBlock];
    const int64_t len = e - b;
    for (int64_t k = 0; k < len; ++k) {
      u[k] = std::min(std::max(px[b + k] / af, l), 1.f);
      au[k] = std::fabs(u[k]);
    }
    apot_ste(u, au, idx, len, pm, m, pl);
    for (int64_t k = 0; k < len; ++k) po[b + k] = au[k] * af;
  });
  return out;
}

// APoT's backward as autograd gives it: the gradient of x ((g * a) where lo < v < 1, else 0; divided by a: torch's
// clamp with number bounds passes none at the bounds) and of a, sum_to(g * ste) + sum_to((-gv) * ((x / a) / a)) (the
// product's and the division's gradients, each reduced as autograd reduces a broadcast input's)
std::vector<torch::Tensor> apot_bwd(torch::Tensor x, torch::Tensor grad, double a, double lo, torch::Tensor mids,
                                    torch::Tensor levels, std::vector<int64_t> a_shape, bool need_a) {
  check(x, "apot bwd");
  check(grad, "apot bwd");
  TORCH_CHECK(grad.sizes() == x.sizes(), "apot bwd: grad and x differ in shape");
  auto gx = torch::empty_like(x);
  auto p1 = need_a ? torch::empty_like(x) : torch::Tensor(), p2 = need_a ? torch::empty_like(x) : torch::Tensor();
  const float *px = x.data_ptr<float>(), *pg = grad.data_ptr<float>(), *pm = mids.data_ptr<float>();
  const float* pl = levels.data_ptr<float>();
  float *ogx = gx.data_ptr<float>(), *o1 = need_a ? p1.data_ptr<float>() : nullptr;
  float* o2 = need_a ? p2.data_ptr<float>() : nullptr;
  const float af = static_cast<float>(a), l = static_cast<float>(lo);
  const int64_t m = mids.numel();
  apot_blocks(x.numel(), [&](int64_t b, int64_t e) {
    float u[kBlock], au[kBlock];
    int32_t idx[kBlock];
    const int64_t len = e - b;
    if (!need_a) {
      for (int64_t k = 0; k < len; ++k) {
        const float v = px[b + k] / af;
        ogx[b + k] = pick((v > l) & (v < 1.f), pg[b + k] * af, 0.f) / af;
      }
      return;
    }
    for (int64_t k = 0; k < len; ++k) {  // no run-time test inside: the loop vectorizes
      const float v = px[b + k] / af;
      const float gv = pick((v > l) & (v < 1.f), pg[b + k] * af, 0.f);
      ogx[b + k] = gv / af;
      u[k] = std::min(std::max(v, l), 1.f);
      au[k] = std::fabs(u[k]);
      o2[b + k] = (-gv) * (v / af);
    }
    apot_ste(u, au, idx, len, pm, m, pl);
    for (int64_t k = 0; k < len; ++k) o1[b + k] = pg[b + k] * au[k];
  });
  std::vector<torch::Tensor> res{gx};
  res.push_back(need_a ? at::sum_to(p1, a_shape) + at::sum_to(p2, a_shape) : torch::Tensor());
  return res;
}

// QIL (bench/algos/qil.py): m = |x| (signed) or x, t = clamp((m - cm) / w, 0, 1), y = t * qmax,
// r = y + (round(y) - y), out = ((r / qmax) * sign(x)) * w (signed; unsigned without the sign), with cm = c - d and
// w = 2 d computed by the caller. torch.sign / sgn give 0 for NaN and +0 for -0.
template <bool SIGNED>
void qil_fwd_impl(const float* x, float* out, float cm, float w, float qf, int64_t n) {
  at::parallel_for(0, n, 16384, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const float m = SIGNED ? std::fabs(x[i]) : x[i];
      const float t = std::min(std::max((m - cm) / w, 0.f), 1.f);
      const float y = t * qf;
      float q = (y + (std::nearbyint(y) - y)) / qf;
      if constexpr (SIGNED) q = q * sign_of(x[i]);
      out[i] = q * w;
    }
  });
}

torch::Tensor qil_fwd(torch::Tensor x, double cm, double w, int64_t qmax, bool is_signed) {
  check(x, "qil fwd");
  auto out = torch::empty_like(x);
  auto args = std::make_tuple(x.data_ptr<float>(), out.data_ptr<float>(), static_cast<float>(cm),
                              static_cast<float>(w), static_cast<float>(qmax), x.numel());
  if (is_signed) std::apply(qil_fwd_impl<true>, args);
  else std::apply(qil_fwd_impl<false>, args);
  return out;
}

// QIL's backward as autograd gives it: g * w (the detached 2 d), times sign(x) (signed), / qmax, * qmax, clamp's mask
// (0 < f < 1, strict), / w; x's gradient times sgn(x) plus sign's zero gradient (signed); the gradients of cm
// (-ge) and w (-gf * ((e / w) / w)) per element, each reduced with at::sum_to
// the loop over [b, e), its arguments plain locals (through a closure they may alias the stores: a scalar loop)
template <bool SIGNED, bool NEED_C, bool NEED_W>
void qil_bwd_run(const float* x, const float* g, float* gx, float* pc, float* pw, float cm, float w, float qf,
                 int64_t b, int64_t e) {
  for (int64_t i = b; i < e; ++i) {
    const float sg = sign_of(x[i]);
    const float m = SIGNED ? std::fabs(x[i]) : x[i];
    const float ev = m - cm;
    const float f = ev / w;
    float gq = g[i] * w;
    if constexpr (SIGNED) gq = gq * sg;
    const float gt = (gq / qf) * qf;
    const float gf = pick((f > 0.f) & (f < 1.f), gt, 0.f);
    const float ge = gf / w;
    gx[i] = SIGNED ? ge * sg + 0.f : ge;
    if constexpr (NEED_C) pc[i] = -ge;  // template arguments, not run-time tests: the loop vectorizes
    if constexpr (NEED_W) pw[i] = (-gf) * (f / w);
  }
}

template <bool SIGNED, bool NEED_C, bool NEED_W>
void qil_bwd_impl(const float* x, const float* g, float* gx, float* pc, float* pw, float cm, float w, float qf,
                  int64_t n) {
  at::parallel_for(0, n, 16384, [=](int64_t b, int64_t e) {
    qil_bwd_run<SIGNED, NEED_C, NEED_W>(x, g, gx, pc, pw, cm, w, qf, b, e);
  });
}

std::vector<torch::Tensor> qil_bwd(torch::Tensor x, torch::Tensor grad, double cm, double w, int64_t qmax,
                                   bool is_signed, std::vector<int64_t> cm_shape, std::vector<int64_t> w_shape,
                                   bool need_cm, bool need_w) {
  check(x, "qil bwd");
  check(grad, "qil bwd");
  TORCH_CHECK(grad.sizes() == x.sizes(), "qil bwd: grad and x differ in shape");
  auto gx = torch::empty_like(x);
  auto pc = need_cm ? torch::empty_like(x) : torch::Tensor(), pw = need_w ? torch::empty_like(x) : torch::Tensor();
  auto args = std::make_tuple(x.data_ptr<float>(), grad.data_ptr<float>(), gx.data_ptr<float>(),
                              need_cm ? pc.data_ptr<float>() : nullptr, need_w ? pw.data_ptr<float>() : nullptr,
                              static_cast<float>(cm), static_cast<float>(w), static_cast<float>(qmax), x.numel());
  const int v = (is_signed ? 4 : 0) + (need_cm ? 2 : 0) + (need_w ? 1 : 0);
  switch (v) {
    case 0: std::apply(qil_bwd_impl<false, false, false>, args); break;
    case 1: std::apply(qil_bwd_impl<false, false, true>, args); break;
    case 2: std::apply(qil_bwd_impl<false, true, false>, args); break;
    case 3: std::apply(qil_bwd_impl<false, true, true>, args); break;
    case 4: std::apply(qil_bwd_impl<true, false, false>, args); break;
    case 5: std::apply(qil_bwd_impl<true, false, true>, args); break;
    case 6: std::apply(qil_bwd_impl<true, true, false>, args); break;
    default: std::apply(qil_bwd_impl<true, true, true>, args); break;
  }
  return {gx, need_cm ? at::sum_to(pc, cm_shape) : torch::Tensor(), need_w ? at::sum_to(pw, w_shape) : torch::Tensor()};
}

// keep element i: the i-th output of SplitMix64 seeded with `key` (Steele et al. 2014), its top 53 bits below t
inline bool keep(uint64_t key, int64_t i, uint64_t t) {
  uint64_t z = key + static_cast<uint64_t>(i + 1) * 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return (z >> 11) < t;
}

torch::Tensor drop_mask(int64_t n, int64_t key, int64_t t) {
  auto out = torch::empty({n}, torch::kBool);
  bool* o = out.data_ptr<bool>();
  const uint64_t k = static_cast<uint64_t>(key), tt = static_cast<uint64_t>(t);
  at::parallel_for(0, n, 16384, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) o[i] = keep(k, i, tt);
  });
  return out;
}

// keep(i) ? a[i] : b[i]
// keep_at(i) ? a : b element by element (QDrop's selections; the mask from a key or a stored mask)
template <typename K>
void select_by(const float* pa, const float* pb, float* o, int64_t n, const K& keep_at) {
  at::parallel_for(0, n, 16384, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) o[i] = pick(keep_at(i), pa[i], pb[i]);
  });
}

// autograd's gradients of torch.where(keep, a, b): (keep ? g : 0, keep ? 0 : g), the zeros +0
template <typename K>
std::vector<torch::Tensor> split_by(const torch::Tensor& g, const K& keep_at) {
  auto ga = torch::empty_like(g), gb = torch::empty_like(g);
  const float* pg = g.data_ptr<float>();
  float *oa = ga.data_ptr<float>(), *ob = gb.data_ptr<float>();
  at::parallel_for(0, g.numel(), 16384, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) {
      const bool kp = keep_at(i);
      oa[i] = pick(kp, pg[i], 0.f);
      ob[i] = pick(kp, 0.f, pg[i]);
    }
  });
  return {ga, gb};
}

torch::Tensor drop_select(torch::Tensor a, torch::Tensor b, int64_t key, int64_t t) {
  check(a, "drop select");
  check(b, "drop select");
  TORCH_CHECK(a.numel() == b.numel(), "drop select: a and b differ in size");
  auto out = torch::empty_like(a);
  const uint64_t k = static_cast<uint64_t>(key), tt = static_cast<uint64_t>(t);
  select_by(a.data_ptr<float>(), b.data_ptr<float>(), out.data_ptr<float>(), a.numel(),
            [&](int64_t i) { return keep(k, i, tt); });
  return out;
}

// the gradient of select split: (keep ? g : 0, keep ? 0 : g)
std::vector<torch::Tensor> drop_split(torch::Tensor g, int64_t key, int64_t t) {
  check(g, "drop split");
  const uint64_t k = static_cast<uint64_t>(key), tt = static_cast<uint64_t>(t);
  return split_by(g, [&](int64_t i) { return keep(k, i, tt); });
}

// QDrop's torch masks (mask_rng=torch: its reference code's torch.rand_like(x) < p), drawn as torch's uniform_ draws
// a float tensor on the CPU: one 32-bit output of the generator's Mersenne Twister per element, in element order, under
// the generator's lock, its low 24 bits times 2^-24 (exact); compared with p as a float (lt with a Python scalar).
// The draw is serial, as torch's; the selection keep ? a : b after it in parallel. Returns (keep ? a : b, keep).
std::vector<torch::Tensor> rand_select(torch::Tensor a, torch::Tensor b, double p, std::optional<at::Generator> gen) {
  check(a, "rand select");
  check(b, "rand select");
  TORCH_CHECK(a.sizes() == b.sizes(), "rand select: shapes");
  auto out = torch::empty_like(a);
  auto keep = torch::empty(a.sizes(), a.options().dtype(torch::kBool));
  auto* g = at::get_generator_or_default<at::CPUGeneratorImpl>(gen, at::detail::getDefaultCPUGenerator());
  const float pf = static_cast<float>(p);
  const int64_t n = a.numel();
  bool* pk = keep.data_ptr<bool>();
  {
    // the generator's engine copied, advanced here (inlined: g->random() is a call per element) and put back
    std::lock_guard<std::mutex> lock(g->mutex_);
    at::mt19937 eng = g->engine();
    at::mt19937_data_pod d = eng.data();
    int64_t i = 0;
    while (i < n) {
      // outputs left before the engine twists its state: temper them in a loop the compiler vectorizes
      const int64_t take = std::min<int64_t>(d.left_ - 1, n - i);
      if (take <= 0) {  // the next output twists first: the engine's own call
        eng.set_data(d);
        pk[i++] = static_cast<float>(eng() & 0xFFFFFFu) * (1.0f / 16777216.0f) < pf;
        d = eng.data();
        continue;
      }
      const uint32_t* st = d.state_.data() + d.next_;
      for (int64_t k = 0; k < take; ++k) {
        uint32_t y = st[k];
        y ^= (y >> 11);
        y ^= (y << 7) & 0x9d2c5680u;
        y ^= (y << 15) & 0xefc60000u;
        y ^= (y >> 18);
        pk[i + k] = static_cast<float>(y & 0xFFFFFFu) * (1.0f / 16777216.0f) < pf;
      }
      d.left_ -= static_cast<int>(take);
      d.next_ += static_cast<uint32_t>(take);
      i += take;
    }
    eng.set_data(d);
    g->set_engine(eng);
  }
  select_by(a.data_ptr<float>(), b.data_ptr<float>(), out.data_ptr<float>(), n, [&](int64_t i) { return pk[i]; });
  return {out, keep};
}

// split_by for a stored mask (rand_select's)
std::vector<torch::Tensor> keep_split(torch::Tensor g, torch::Tensor keep) {
  check(g, "keep split");
  TORCH_CHECK(keep.is_contiguous() && keep.scalar_type() == torch::kBool && keep.sizes() == g.sizes(),
              "keep split: the mask");
  const bool* pk = keep.data_ptr<bool>();
  return split_by(g, [&](int64_t i) { return pk[i]; });
}

// bench/algos/qat.py's positive(s) = s.abs().clamp_min(eps), forward and the gradient autograd gives it (its nodes
// ClampMinBackward0: where(|s| > eps, g, 0), then AbsBackward0: that times sgn(s)), per step value in C++ (a few
// values per quantizer: eight ATen calls less), element for element the IEEE results of those ops: |s| is exact, the
// bound is eps as a float (ATen's scalar), a NaN passes clamp_min and fails the comparison, sgn(NaN) is 0
torch::Tensor positive_fwd(const torch::Tensor& s, double eps) {
  auto sc = s.contiguous();
  auto out = torch::empty_like(sc);
  const float e = static_cast<float>(eps);
  const float* ps = sc.data_ptr<float>();
  float* po = out.data_ptr<float>();
  for (int64_t i = 0; i < sc.numel(); ++i) {
    const float a = std::fabs(ps[i]);
    po[i] = a < e ? e : a;
  }
  return out;
}

torch::Tensor positive_bwd(const torch::Tensor& g, const torch::Tensor& s, double eps) {
  auto gc = g.contiguous(), sc = s.contiguous();
  TORCH_CHECK(gc.numel() == sc.numel(), "positive bwd: sizes");
  auto out = torch::empty_like(sc);
  const float e = static_cast<float>(eps);
  const float *pg = gc.data_ptr<float>(), *ps = sc.data_ptr<float>();
  float* po = out.data_ptr<float>();
  for (int64_t i = 0; i < sc.numel(); ++i) {
    const float kept = std::fabs(ps[i]) > e ? pg[i] : 0.f;
    const float sg = ps[i] > 0.f ? 1.f : (ps[i] < 0.f ? -1.f : 0.f);
    po[i] = kept * sg;
  }
  return out;
}

// bench/quant/lsq_eager.py's backward, op for op (the route of a gradient that is not contiguous: the eager products
// follow its layout, and the sums their order)
std::vector<torch::Tensor> lsq_bwd_eager(const torch::Tensor& x, const torch::Tensor& grad, const torch::Tensor& s,
                                         const torch::Tensor& zr, int64_t qmin, int64_t qmax, int64_t mode,
                                         bool need_z, int64_t ch, double gf) {
  std::vector<int64_t> shape(x.dim(), 1), dims;
  if (ch >= 0) shape[ch] = -1;
  for (int64_t d = 0; d < x.dim(); ++d)
    if (d != ch) dims.push_back(d);
  const auto sb = ch >= 0 ? s.reshape(shape) : s.reshape({});
  const auto zb = !zr.defined() ? at::zeros({}, s.options()) : (ch >= 0 ? zr.reshape(shape) : zr.reshape({}));
  const bool zero_z = !zr.defined() || !zr.any().item<bool>();
  const auto u = x * sb.reciprocal();
  torch::Tensor code;
  if (mode == 0) code = at::round(u);
  else if (mode == 1) code = at::floor(u + 0.5);
  else code = at::sign(u) * at::floor(u.abs() + 0.5);
  code = code.clamp_(at::rsub(zb, qmin), at::rsub(zb, qmax));
  const auto v = zero_z ? u : u + zb;
  const auto clipped = at::le(v, qmin).logical_or_(at::ge(v, qmax));
  auto gx = grad.masked_fill(clipped, 0.0);
  auto ds = at::sub(code, u);
  at::where_out(ds, clipped, code, ds);
  auto gs = ds.mul_(grad).sum(dims).reshape(s.sizes()) * gf;
  if (!need_z) return {gx, gs};
  auto dz = at::where(clipped, -sb.expand_as(v), at::zeros_like(v));
  return {gx, gs, (grad * dz).sum(dims).reshape(zr.sizes()) * gf};
}

// LSQ's fake quantizer (bench/quant/lsq_eager.py, EagerLSQ) as an autograd node of its own: forward and backward run in C++,
// without Python in between (an autograd.Function defined in Python costs a Python call, a context and the GIL each
// way, per quantizer, per step). eps >= 0: s is the raw learned step and the grid's step is positive(s, eps), its
// gradient taken back through positive as autograd would. The zero point is rounded as EagerLSQ rounds it.
struct LSQFn : public torch::autograd::Function<LSQFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x, torch::Tensor s,
                               c10::optional<torch::Tensor> z, int64_t qmin, int64_t qmax, int64_t mode, int64_t ch,
                               double gf, double eps) {
    const auto sp = eps >= 0 ? positive_fwd(s, eps) : s;
    c10::optional<torch::Tensor> zr;
    if (z.has_value()) zr = at::floor(z->detach() + 0.5).clamp(qmin, qmax);  // new: z may change in place
    ctx->save_for_backward({x, s, sp, zr.has_value() ? *zr : torch::Tensor()});
    ctx->saved_data["meta"] = std::vector<int64_t>{qmin, qmax, mode, ch, z.has_value()};
    ctx->saved_data["gf"] = gf;
    ctx->saved_data["eps"] = eps;
    return fwd(x, sp, zr, qmin, qmax, mode, ch);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    TORCH_CHECK(!at::GradMode::is_enabled(), "LSQ: a first-order node (no double backward); fused=false for that");
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& s = saved[1];
    const auto& sp = saved[2];
    const auto& zr = saved[3];
    const auto meta = ctx->saved_data["meta"].toIntVector();
    const int64_t qmin = meta[0], qmax = meta[1], mode = meta[2], ch = meta[3];
    const bool has_z = meta[4] != 0, need_z = has_z && ctx->needs_input_grad(2);
    const double gf = ctx->saved_data["gf"].toDouble(), eps = ctx->saved_data["eps"].toDouble();
    const auto& grad = grads[0];
    const auto res = grad.is_contiguous() && grad.scalar_type() == torch::kFloat && grad.device().is_cpu()
                         ? bwd(x, grad, sp, has_z ? c10::optional<torch::Tensor>(zr) : c10::nullopt, qmin, qmax,
                               mode, need_z, ch, gf)
                         : lsq_bwd_eager(x, grad, sp, zr, qmin, qmax, mode, need_z, ch, gf);
    const auto gs = eps >= 0 ? positive_bwd(res[1], s, eps) : res[1];
    return {res[0], gs, need_z ? res[2] : torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(),
            torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

// strategy 4's fold factor as an autograd node (fold_factor forward, fold_factor_grad back to gamma), with no Python
// on either side
struct FoldFn : public torch::autograd::Function<FoldFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor gamma, torch::Tensor var,
                               double eps, double floor_) {
    auto r = fold_factor(gamma, var, eps, floor_);
    ctx->save_for_backward({r[1], r[2]});  // new tensors: BN updates var in place after this
    ctx->saved_data["floor"] = floor_;
    return r[0];
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    TORCH_CHECK(!at::GradMode::is_enabled(), "fold factor: a first-order node (no double backward); fused=false for that");
    const auto saved = ctx->get_saved_variables();
    const double fl = ctx->saved_data["floor"].toDouble();
    return {fold_factor_grad(grads[0].contiguous(), saved[0], saved[1], fl), torch::Tensor(), torch::Tensor(),
            torch::Tensor()};
  }
};

torch::Tensor fold_apply(torch::Tensor gamma, torch::Tensor var, double eps, double floor_) {
  return FoldFn::apply(gamma, var, eps, floor_);
}

// (bn(y / f), y / f) as one autograd node (bench/quant/fused_divbn.py): y divided in place (returned as the second
// output), BN in training mode with its running-statistics update; backward div_bn_grad at the width the Python side
// found agreeing with ATen for this shape (0: ATen's BN backward and the division's products, as eager)
struct DivBNFn : public torch::autograd::Function<DivBNFn> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, torch::Tensor y,
                                                torch::Tensor f, torch::Tensor w, torch::Tensor b, torch::Tensor rm,
                                                torch::Tensor rv, double momentum, double eps, int64_t width) {
    auto z = y.div_(f.reshape({1, -1, 1, 1}));
    ctx->mark_dirty({y});
    auto res = at::native_batch_norm(z, w, b, rm, rv, true, momentum, eps);
    ctx->save_for_backward({z, f, w, std::get<1>(res), std::get<2>(res)});
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["width"] = width;
    ctx->set_materialize_grads(false);
    return {std::get<0>(res), z};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    TORCH_CHECK(!at::GradMode::is_enabled(), "division and BN: a first-order node (no double backward); fused=false for that");
    const auto saved = ctx->get_saved_variables();
    const auto &z = saved[0], &f = saved[1], &w = saved[2], &mean = saved[3], &invstd = saved[4];
    const double eps = ctx->saved_data["eps"].toDouble();
    const int64_t width = ctx->saved_data["width"].toInt();
    auto dy = grads[0].defined() ? grads[0] : torch::zeros_like(z);
    const auto& extra = grads[1];
    torch::Tensor gy, prod, gw, gb;
    if (!extra.defined() && width > 0 && dy.is_contiguous()) {
      auto r = div_bn_grad(dy, z, f, w, mean, invstd, width);
      gy = r[0], prod = r[1], gw = r[2], gb = r[3];
    } else {  // as eager: autograd's BN backward, then the division's two products (someone used the quotient: its
              // gradient joins BN's)
      auto r = at::native_batch_norm_backward(dy, z, w, {}, {}, mean, invstd, true, eps, {true, true, true});
      auto dz = std::get<0>(r);
      if (extra.defined()) dz = dz + extra;
      const auto f4 = f.reshape({1, -1, 1, 1});
      gy = dz / f4, prod = (z / f4).mul_(dz), gw = std::get<1>(r), gb = std::get<2>(r);
    }
    // keepdim as autograd's sum_to reduces a broadcast operand (without it, another reduction order)
    auto gf = ctx->needs_input_grad(1) ? prod.sum({0, 2, 3}, true).neg_().reshape(f.sizes()) : torch::Tensor();
    return {ctx->needs_input_grad(0) ? gy : torch::Tensor(), gf, ctx->needs_input_grad(2) ? gw : torch::Tensor(),
            ctx->needs_input_grad(3) ? gb : torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(),
            torch::Tensor(), torch::Tensor()};
  }
};

torch::Tensor div_bn_apply(torch::Tensor y, torch::Tensor f, torch::Tensor w, torch::Tensor b, torch::Tensor rm,
                           torch::Tensor rv, double momentum, double eps, int64_t width) {
  return DivBNFn::apply(y, f, w, b, rm, rv, momentum, eps, width)[0];
}

torch::Tensor lsq_apply(torch::Tensor x, torch::Tensor s, c10::optional<torch::Tensor> z, int64_t qmin, int64_t qmax,
                        int64_t mode, int64_t ch, double gf, double eps) {
  return LSQFn::apply(x, s, z, qmin, qmax, mode, ch, gf, eps);
}

// how many threads at::parallel_for uses for a large range (1 unless the extension was built with OpenMP)
int64_t threads() {
  std::mutex mu;
  std::set<int> ids;
  at::parallel_for(0, 1 << 20, 1, [&](int64_t, int64_t) {
    std::lock_guard<std::mutex> lock(mu);
    ids.insert(at::get_thread_num());
  });
  return static_cast<int64_t>(ids.size());
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  // the GIL is released while the kernels run, as eager ops do
  m.def("lsq_apply", &lsq_apply, "LSQ's fake quantizer as an autograd node (forward and backward in C++)",
        py::call_guard<py::gil_scoped_release>());
  m.def("fold_factor", &fold_factor, "strategy 4's fold factor (f, f0, sigma)");
  m.def("fold_apply", &fold_apply, "strategy 4's fold factor as an autograd node",
        py::call_guard<py::gil_scoped_release>());
  m.def("div_bn_apply", &div_bn_apply, "bn(y / f) as one autograd node (y divided in place)",
        py::call_guard<py::gil_scoped_release>());
  m.def("fold_factor_grad", &fold_factor_grad, "gamma's gradient through the fold factor");
  m.def("div_channels_grad", &div_channels_grad, "(grad / f, (z / f) * grad)",
        py::call_guard<py::gil_scoped_release>());
  m.def("div_bn_grad", &div_bn_grad, "(grad of y, (z / f) * dx, grad of BN's weight, bias) for BN(y / f)",
        py::call_guard<py::gil_scoped_release>());
  m.def("conv1_input_grad", &conv1_input_grad, "input gradient of a conv with one input channel",
        py::call_guard<py::gil_scoped_release>());
  m.def("pact_fwd", &pact_fwd, "PACT's clip, fake quantization and straight-through sum",
        py::call_guard<py::gil_scoped_release>());
  m.def("pact_bwd", &pact_bwd, "PACT's gradients of x, lo, hi", py::call_guard<py::gil_scoped_release>());
  m.def("clipq_bwd", &clipq_bwd, "DoReFa's activation gradient (fake quantization of a clip)",
        py::call_guard<py::gil_scoped_release>());
  m.def("dsq_fwd", &dsq_fwd, "DSQ's fake quantization: (out, the soft step's tanh)",
        py::call_guard<py::gil_scoped_release>());
  m.def("dsq_bwd", &dsq_bwd, "DSQ's gradient of x", py::call_guard<py::gil_scoped_release>());
  m.def("apot_fwd", &apot_fwd, "APoT's projection onto its levels", py::call_guard<py::gil_scoped_release>());
  m.def("apot_bwd", &apot_bwd, "APoT's gradients of x and alpha", py::call_guard<py::gil_scoped_release>());
  m.def("qil_fwd", &qil_fwd, "QIL's transformer and discretiser", py::call_guard<py::gil_scoped_release>());
  m.def("qil_bwd", &qil_bwd, "QIL's gradients of x, c - d and 2 d", py::call_guard<py::gil_scoped_release>());
  m.def("mask", &drop_mask, "QDrop's keep mask of n elements", py::call_guard<py::gil_scoped_release>());
  m.def("select", &drop_select, "keep ? a : b with QDrop's keep mask", py::call_guard<py::gil_scoped_release>());
  m.def("split", &drop_split, "(keep ? g : 0, keep ? 0 : g)", py::call_guard<py::gil_scoped_release>());
  m.def("rand_select", &rand_select, "(keep ? a : b, keep) with keep = torch.rand(...) < p from torch's generator",
        py::call_guard<py::gil_scoped_release>());
  m.def("keep_split", &keep_split, "(keep ? g : 0, keep ? 0 : g) for a stored mask",
        py::call_guard<py::gil_scoped_release>());
  m.def("threads", &threads, "threads at::parallel_for splits a large range over");
}
