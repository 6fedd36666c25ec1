// Helpers of the emulated CUDA kernel tests (test_*_cuda.cc in this directory): output buffers
// that start unwritten, the tolerance table, comparisons of a CUDA launcher's outputs with the CPU
// launcher's, checks of the launch log (the stream, the launch shapes of the elementwise kernels,
// launches of nothing), seeded input generators, and the launch part of the suites' cases.
//
// The CPU kernels are the reference here: each is checked against long-double references of its
// own formulas in tests/cpp (test_softmax_ce.cc, test_kl.cc, ...). Both sides are compared with
// the per-dtype tolerance table of the Python suites (tests/tolerances.py), the one that
// tests/gpu uses against float64 references on a GPU.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "cuda_runtime.h"
#include "dtypes.h"
#include "test_util.h"

namespace paddle_ops {
namespace emu_test {

using test_util::Buffer;
using test_util::LD;

// The stream the tests pass to every launcher; no launch or memset may go anywhere else.
inline cudaStream_t test_stream() { return reinterpret_cast<cudaStream_t>(uintptr_t{0x7e57}); }

// Every launch and memset since cuda_emu::clear_log() went to test_stream().
inline ::testing::AssertionResult all_on_test_stream() {
  for (const cuda_emu::Launch& l : cuda_emu::log()) {
    if (l.stream != test_stream()) {
      return ::testing::AssertionFailure()
             << (l.memset ? "a memset" : "a launch") << " went to stream " << l.stream;
    }
  }
  return ::testing::AssertionSuccess();
}

// Runs one CUDA launcher call, which must return 0 (cudaSuccess) and queue all its work on the
// test stream. The launch log is left for the caller's path checks.
template <typename F>
::testing::AssertionResult on_device(const std::string& what, F&& launch) {
  cuda_emu::clear_log();
  const int rc = launch();
  if (rc != 0) {
    return ::testing::AssertionFailure()
           << what << " returned " << rc << ": " << cuda_emu::last_failure();
  }
  return all_on_test_stream();
}

// The kernel launches (not the memsets) since the last on_device call.
inline std::vector<cuda_emu::Launch> kernel_launches() {
  std::vector<cuda_emu::Launch> out;
  for (const cuda_emu::Launch& l : cuda_emu::log()) {
    if (!l.memset) out.push_back(l);
  }
  return out;
}

inline std::string dims(const cuda_emu::Launch& l) {
  return "grid (" + std::to_string(l.grid.x) + "," + std::to_string(l.grid.y) + "), block " +
         std::to_string(l.block.x);
}

inline std::string dims(const std::vector<cuda_emu::Launch>& launches) {
  std::string s;
  for (const cuda_emu::Launch& l : launches) s += "[" + dims(l) + "] ";
  return s;
}

// The launch shapes of cuda/rows.cuh's row kernels (pick_rows) that a case is written for.
enum class Path { kThread, kWarp, kBlock };

// Whether launch l is the row kernel of `path` for `rows` rows: a thread per row in blocks of
// 256, a warp per row in blocks of 4 warps, or a block (64 to 1024 threads) per row; `threads`,
// when not 0, is the block size a kBlock case is for.
inline ::testing::AssertionResult is_row_launch(const cuda_emu::Launch& l, Path path,
                                                int64_t rows, unsigned threads) {
  bool ok = false;
  switch (path) {
    case Path::kThread:
      ok = l.block.x == 256 && l.grid.x == static_cast<unsigned>((rows + 255) / 256);
      break;
    case Path::kWarp:
      ok = l.block.x == 128 && l.grid.x == static_cast<unsigned>((rows + 3) / 4);
      break;
    case Path::kBlock:
      ok = l.grid.x == static_cast<unsigned>(rows) && l.block.x >= 64 && l.block.x <= 1024 &&
           (threads == 0 || l.block.x == threads);
      break;
  }
  if (ok) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "not the launch of this case's path: " << dims(l);
}

// The row-sum launches of cuda/elementwise.cuh's plan_rows (binary losses, Gaussian KL) that a
// case is written for.
enum class Rows { kLanes1, kLanes8, kLanes32, kBlock, kSplit };

// Whether `launches` are the row-sum launches of `path` for a [rows, cols] problem: W lanes per
// row in blocks of 256 threads (256 / W rows each), a block of 64 to 512 threads per row (of
// `threads` when not 0), or a block of 256 threads per 8192-column segment followed by the
// segments' sum in blocks of 4 warps. These are the launch constants of cuda/elementwise.cuh.
inline ::testing::AssertionResult is_rows_launch(const std::vector<cuda_emu::Launch>& launches,
                                                 Rows path, int64_t rows, int64_t cols,
                                                 unsigned threads = 0) {
  auto lanes = [&](int64_t w) {
    return launches.size() == 1 && launches[0].block.x == 256 &&
           launches[0].grid.x == static_cast<unsigned>((rows * w + 255) / 256);
  };
  bool ok = false;
  switch (path) {
    case Rows::kLanes1:
      ok = lanes(1);
      break;
    case Rows::kLanes8:
      ok = lanes(8);
      break;
    case Rows::kLanes32:
      ok = lanes(32);
      break;
    case Rows::kBlock:
      ok = launches.size() == 1 && launches[0].grid.x == static_cast<unsigned>(rows) &&
           launches[0].block.x >= 64 && launches[0].block.x <= 512 &&
           (threads == 0 || launches[0].block.x == threads);
      break;
    case Rows::kSplit:
      ok = launches.size() == 2 && launches[0].block.x == 256 &&
           launches[0].grid.x == static_cast<unsigned>(rows * ((cols + 8191) / 8192)) &&
           launches[1].block.x == 128;
      break;
  }
  if (ok) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "not the row sums of this case's path: " << dims(launches);
}

// The flat elementwise loop: one launch of 256-thread blocks.
inline ::testing::AssertionResult is_flat_launch(const std::vector<cuda_emu::Launch>& launches) {
  if (launches.size() == 1 && launches[0].block.x == 256 && launches[0].grid.y == 1) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "not the flat loop: " << dims(launches);
}

// tests/tolerances.py, per storage type: losses (and every fp32/fp64 accumulator output) and
// gradients (stored in the input's type), each atol + rtol * |reference|.
struct Tol {
  LD atol;
  LD rtol;
};

template <typename T>
Tol loss_tol() {
  if constexpr (std::is_same<T, double>::value) {
    return {1e-10L, 1e-10L};
  } else {
    return {2e-5L, 2e-5L};
  }
}

template <typename T>
Tol grad_tol() {
  if constexpr (std::is_same<T, double>::value) {
    return {1e-12L, 1e-10L};
  } else if constexpr (std::is_same<T, float>::value) {
    return {1e-6L, 2e-5L};
  } else if constexpr (std::is_same<T, fp16>::value) {
    return {1e-6L, 1.0L / 1024};
  } else {
    return {1e-6L, 1.0L / 128};
  }
}

// What output buffers hold before a launcher runs: a quiet NaN with a payload that no kernel
// produces (arithmetic gives the default NaN, and input NaNs pass on their own payloads), so
// close_all can tell an element left unwritten from a NaN result.
template <typename E>
E unwritten() {
  if constexpr (std::is_same<E, float>::value) {
    return bits_float(0x7fc0deadu);
  } else if constexpr (std::is_same<E, double>::value) {
    const uint64_t bits = 0x7ff8dead0000deadull;
    double d;
    std::memcpy(&d, &bits, sizeof d);
    return d;
  } else if constexpr (std::is_same<E, fp16>::value) {
    return fp16{0x7e5a};
  } else {
    static_assert(std::is_same<E, bf16>::value, "no unwritten value for this type");
    return bf16{0x7fda};
  }
}

// n elements, `offset` into their buffer, every one unwritten<E>(): an output before a launch.
template <typename E>
Buffer<E> unwritten_buffer(int64_t n, int64_t offset = 0) {
  Buffer<E> b(n, offset);
  b.fill(unwritten<E>());
  return b;
}

template <typename E>
bool is_unwritten(const E& v) {
  const E u = unwritten<E>();
  return std::memcmp(&v, &u, sizeof(E)) == 0;
}

// got[i] against want[i] for i < n (NaN matches NaN, an infinity the same infinity); an element
// of got still holding unwritten<E>() fails whatever want holds.
template <typename E>
::testing::AssertionResult close_all(const char* what, const E* got, const E* want, int64_t n,
                                     Tol tol) {
  test_util::Mismatches m;
  int64_t left = 0;
  int64_t first_left = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (is_unwritten(got[i])) {
      if (first_left < 0) first_left = i;
      ++left;
      continue;
    }
    const LD w = test_util::value(want[i]);
    m.check(what, i, test_util::value(got[i]), w, tol.atol + tol.rtol * std::fabs(w));
  }
  ::testing::AssertionResult r = m.result();
  if (left == 0) return r;
  return ::testing::AssertionFailure()
         << what << ": " << left << " elements left unwritten (the "
         << "first at " << first_left << ")" << (r ? "" : "; ") << (r ? "" : r.message());
}

template <typename E>
::testing::AssertionResult close_all(const char* what, const Buffer<E>& got, const Buffer<E>& want,
                                     Tol tol) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure()
           << what << ": sizes " << got.size() << " and " << want.size();
  }
  return close_all(what, got.data(), want.data(), got.size(), tol);
}

// Outputs that a launcher with nothing to do must leave as they are: n accumulator elements and
// one gradient element, every one 7.
template <typename T>
struct Sentinels {
  using A = acc_t<T>;
  Buffer<A> acc;
  Buffer<T> grad;

  explicit Sentinels(int64_t n) : acc(n), grad(1) {
    acc.fill(static_cast<A>(7));
    grad.fill(test_util::encode<T>(7));
  }
  ::testing::AssertionResult intact() const {
    for (int64_t i = 0; i < acc.size(); ++i) {
      if (acc[i] != static_cast<A>(7)) {
        return ::testing::AssertionFailure() << "accumulator " << i << " written: " << acc[i];
      }
    }
    if (test_util::value(grad[0]) != 7) return ::testing::AssertionFailure() << "gradient written";
    return ::testing::AssertionSuccess();
  }
};

// A problem with nothing to compute: fwd(acc) and bwd(grad), each given outputs that hold
// Sentinels, must succeed, launch nothing and write nothing.
template <typename T, typename Fwd, typename Bwd>
void expect_nothing_launched(Fwd fwd, Bwd bwd) {
  Sentinels<T> out(1);
  EXPECT_TRUE(on_device("forward", [&] { return fwd(out.acc.data()); }));
  EXPECT_TRUE(cuda_emu::log().empty());
  EXPECT_TRUE(on_device("backward", [&] { return bwd(out.grad.data()); }));
  EXPECT_TRUE(cuda_emu::log().empty());
  EXPECT_TRUE(out.intact());
}

// n values `offset` elements into their buffer: value(gen, i) for i = 0, 1, ..., n - 1 in turn,
// drawing from one generator seeded with `seed`.
template <typename E, typename Value>
Buffer<E> drawn(int64_t n, int64_t offset, uint32_t seed, Value value) {
  Buffer<E> b(n, offset);
  std::mt19937 gen(seed);
  for (int64_t i = 0; i < n; ++i) b[i] = value(gen, i);
  return b;
}

// N(0, scale^2) values stored as T (rounded once).
template <typename T>
void fill_normal(Buffer<T>& b, uint32_t seed, double scale = 3.0) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> normal(0.0, scale);
  for (int64_t i = 0; i < b.size(); ++i) b[i] = test_util::encode<T>(normal(gen));
}

// The launch part of an emulated case, the base of the suites' case builders: the launch shape
// the case is written for (checked in the launch log), the block size of a block-per-row case, and
// how many elements into their buffers the arrays start (the two inputs, and the outputs).
template <typename Case, typename Path>
struct LaunchCase {
  std::string name;
  Path path;
  unsigned block_threads = 0;  // a block per row: the block size this case is for (0: any)
  int64_t x_offset = 0;
  int64_t y_offset = 0;
  int64_t out_offset = 0;

  LaunchCase(std::string n, Path p) : name(std::move(n)), path(p) {}
  Case& threads(unsigned n) { return test_util::set_option<Case>(*this, &Case::block_threads, n); }
  Case& offsets(int64_t x, int64_t y, int64_t out) {
    x_offset = x;
    y_offset = y;
    out_offset = out;
    return static_cast<Case&>(*this);
  }
};

// A LaunchCase of [rows, cols] whose forward sums rows (the elementwise families and kl_div).
template <typename Case, typename Path>
struct RowsCase : LaunchCase<Case, Path> {
  int64_t rows;
  int64_t cols;
  // Only the calls that sum rows (each suite says which): for long rows, whose flat loops over
  // every element the smaller cases cover.
  bool sums_only = false;

  RowsCase(std::string n, int64_t r, int64_t c, Path p)
      : LaunchCase<Case, Path>(std::move(n), p), rows(r), cols(c) {}
  Case& row_sums_only() { return test_util::set_option<Case>(*this, &Case::sums_only, true); }
};

// Runs `f` with the emulator resuming fibers in `order`, and restores the forward order.
template <typename F>
void in_order(cuda_emu::Order order, F&& f) {
  cuda_emu::set_order(order);
  f();
  cuda_emu::set_order(cuda_emu::Order::kForward);
}

}  // namespace emu_test
}  // namespace paddle_ops
