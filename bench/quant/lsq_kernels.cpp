// LSQ fake quantization, forward and backward (before the gradient sums), one pass each over memory.
// Every element goes through the IEEE operations of bench/quant/lsq.py in the same order; built without
// floating-point contraction or fast-math, so the results are those of the eager kernels bit for bit. Built with
// -fopenmp: at::parallel_for splits the work over torch's intra-op threads only in an OpenMP build.
// Also QDrop's counter-based drop masks (bench/ptq/drop.py): integer arithmetic and selections only.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <set>

namespace {

template <int M>
inline float rnd(float u) {
  if constexpr (M == 0) {
    return std::nearbyint(u);  // torch.round: half to even (the default rounding mode)
  } else if constexpr (M == 1) {
    return std::floor(u + 0.5f);  // floor(u + 1/2)
  } else {
    float sg = u > 0.f ? 1.f : (u < 0.f ? -1.f : 0.f);  // torch.sign(u) * floor(|u| + 1/2)
    return sg * std::floor(std::fabs(u) + 0.5f);
  }
}

// torch.clamp(c, lo, hi) with tensor bounds: max, then min; a NaN bound gives NaN (as eager), a NaN c stays NaN
inline float clampf(float c, float lo, float hi) {
  if (lo != lo || hi != hi) return std::numeric_limits<float>::quiet_NaN();
  return std::min(std::max(c, lo), hi);
}

// f(begin, end, channel) over runs of one channel of a [outer, C, inner] tensor, split across torch's threads
template <class F>
void runs(int64_t n, int64_t C, int64_t inner, const F& f) {
  at::parallel_for(0, n, 16384, [&](int64_t b, int64_t e) {
    while (b < e) {
      int64_t c = C == 1 ? 0 : (b / inner) % C;
      int64_t stop = C == 1 ? e : std::min(e, (b / inner + 1) * inner);
      f(b, stop, c);
      b = stop;
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
    for (int64_t i = b; i < e; ++i) {
      const float u = x[i] * rc;
      const float code = clampf(rnd<M>(u), l, h);
      const float v = ZERO_Z ? u : u + z;
      const bool clipped = (v <= qmin) | (v >= qmax);
      const float gi = g[i];
      gx[i] = clipped ? 0.f : gi;
      ps[i] = (clipped ? code : code - u) * gi;
      if constexpr (NEED_Z) pz[i] = gi * (clipped ? nsc : 0.f);
    }
  });
}

void check(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == torch::kFloat && t.is_contiguous(), name,
              ": a contiguous float32 CPU tensor is needed");
}

// x: any contiguous float32 tensor viewed as [outer, C, inner]; r, sb, lo, hi: C values (1 per tensor)
torch::Tensor fwd(torch::Tensor x, torch::Tensor r, torch::Tensor sb, torch::Tensor lo, torch::Tensor hi,
                  int64_t mode, int64_t C, int64_t inner) {
  for (auto* t : {&x, &r, &sb, &lo, &hi}) check(*t, "lsq fwd");
  TORCH_CHECK(r.numel() == C && sb.numel() == C && lo.numel() == C && hi.numel() == C, "lsq fwd: C parameters");
  auto out = torch::empty_like(x);
  const int64_t n = x.numel();
  auto args = std::make_tuple(x.data_ptr<float>(), out.data_ptr<float>(), r.data_ptr<float>(), sb.data_ptr<float>(),
                              lo.data_ptr<float>(), hi.data_ptr<float>(), n, C, inner);
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

std::vector<torch::Tensor> bwd(torch::Tensor x, torch::Tensor grad, torch::Tensor r, torch::Tensor sb,
                               torch::Tensor lo, torch::Tensor hi, torch::Tensor zb, double qmin, double qmax,
                               int64_t mode, bool zero_z, bool need_z, int64_t C, int64_t inner) {
  for (auto* t : {&x, &grad, &r, &sb, &lo, &hi, &zb}) check(*t, "lsq bwd");
  TORCH_CHECK(grad.numel() == x.numel(), "lsq bwd: grad and x differ in size");
  auto gx = torch::empty_like(x), ps = torch::empty_like(x);
  auto pz = need_z ? torch::empty_like(x) : torch::Tensor();
  float* pzp = need_z ? pz.data_ptr<float>() : nullptr;
  const int64_t n = x.numel();
  auto args = std::make_tuple(zero_z, need_z, x.data_ptr<float>(), grad.data_ptr<float>(), gx.data_ptr<float>(),
                              ps.data_ptr<float>(), pzp, r.data_ptr<float>(), sb.data_ptr<float>(),
                              lo.data_ptr<float>(), hi.data_ptr<float>(), zb.data_ptr<float>(), (float)qmin,
                              (float)qmax, n, C, inner);
  if (mode == 0) std::apply(bwd_mode<0>, args);
  else if (mode == 1) std::apply(bwd_mode<1>, args);
  else std::apply(bwd_mode<2>, args);
  if (need_z) return {gx, ps, pz};
  return {gx, ps};
}

// keep element i: the i-th output of SplitMix64 seeded with `key` (Steele et al. 2014), its top 53 bits below t
inline bool keep(uint64_t key, int64_t i, uint64_t t) {
  uint64_t z = key + static_cast<uint64_t>(i + 1) * 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return (z >> 11) < t;
}

// k ? a : b on the bits, without a branch: the masks are random, a branch would be mispredicted half the time
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
torch::Tensor drop_select(torch::Tensor a, torch::Tensor b, int64_t key, int64_t t) {
  check(a, "drop select");
  check(b, "drop select");
  TORCH_CHECK(a.numel() == b.numel(), "drop select: a and b differ in size");
  auto out = torch::empty_like(a);
  const float *pa = a.data_ptr<float>(), *pb = b.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const uint64_t k = static_cast<uint64_t>(key), tt = static_cast<uint64_t>(t);
  at::parallel_for(0, a.numel(), 16384, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) o[i] = pick(keep(k, i, tt), pa[i], pb[i]);
  });
  return out;
}

// the gradient of select split: (keep ? g : 0, keep ? 0 : g)
std::vector<torch::Tensor> drop_split(torch::Tensor g, int64_t key, int64_t t) {
  check(g, "drop split");
  auto ga = torch::empty_like(g), gb = torch::empty_like(g);
  const float* pg = g.data_ptr<float>();
  float *oa = ga.data_ptr<float>(), *ob = gb.data_ptr<float>();
  const uint64_t k = static_cast<uint64_t>(key), tt = static_cast<uint64_t>(t);
  at::parallel_for(0, g.numel(), 16384, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) {
      const bool kp = keep(k, i, tt);
      oa[i] = pick(kp, pg[i], 0.f);
      ob[i] = pick(kp, 0.f, pg[i]);
    }
  });
  return {ga, gb};
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
  m.def("fwd", &fwd, "LSQ forward: clamp(round(x * r), lo, hi) * sb", py::call_guard<py::gil_scoped_release>());
  m.def("bwd", &bwd, "LSQ backward before the sums: grad_x, ds * grad[, grad * dz]",
        py::call_guard<py::gil_scoped_release>());
  m.def("mask", &drop_mask, "QDrop's keep mask of n elements", py::call_guard<py::gil_scoped_release>());
  m.def("select", &drop_select, "keep ? a : b with QDrop's keep mask", py::call_guard<py::gil_scoped_release>());
  m.def("split", &drop_split, "(keep ? g : 0, keep ? 0 : g)", py::call_guard<py::gil_scoped_release>());
  m.def("threads", &threads, "threads at::parallel_for splits a large range over");
}
