// int64 indexing of the CUDA softmax cross-entropy on more than 2^31 elements, on the emulator.
// Disabled by default: it needs about 4.3 GB of memory and a few minutes, too much for every CI
// run. Run it with (one line)
//   build/cpp-sanitize/paddle_ops_cuda_emu_tests --gtest_also_run_disabled_tests
//       --gtest_filter='*LargeIndex*'
// (tests/gpu/test_softmax_ce_cuda.py::test_bf16_over_2_pow_31_elements is the same check on a GPU.)
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cmath>
#include <cstdint>

#include "cuda_runtime.h"
#include "emu_test_util.h"
#include "softmax_ce_cases.h"

namespace paddle_ops {
namespace {

// Zero-filled pages from the kernel: reading them costs no memory, writing allocates them.
template <typename E>
class Mapped {
 public:
  explicit Mapped(int64_t n) : bytes_(static_cast<std::size_t>(n) * sizeof(E)) {
    void* p = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    data_ = p == MAP_FAILED ? nullptr : static_cast<E*>(p);
  }
  ~Mapped() {
    if (data_ != nullptr) munmap(data_, bytes_);
  }
  Mapped(const Mapped&) = delete;
  Mapped& operator=(const Mapped&) = delete;
  E* data() const { return data_; }

 private:
  std::size_t bytes_;
  E* data_ = nullptr;
};

// Two rows of 2^30 + 3 bf16 logits, all 0 except row 1's target, 5, which lies past element
// 2^31, where a 32-bit index wraps. lse = log C (row 1's e^5 changes it by 1.4e-7, below fp32's
// resolution at 20.8), so loss = log C in row 0 and log C - 5 in row 1: the forward must read
// the target where it is. The gradient is 1/C (2^-30 in bf16) except -1 at the labels.
TEST(CudaEmuLargeIndex, DISABLED_Bf16SoftmaxCEOverTwoPow31Elements) {
  constexpr int64_t kClasses = (int64_t{1} << 30) + 3;
  SoftmaxCEParams p;
  p.outer = 2;
  p.classes = kClasses;
  const int64_t n = p.rows() * kClasses;
  ASSERT_GT(n, int64_t{1} << 31);
  Mapped<bf16> x(n);
  Mapped<bf16> grad(n);
  ASSERT_NE(x.data(), nullptr);
  ASSERT_NE(grad.data(), nullptr);
  const int64_t label[2] = {5, kClasses - 2};
  ASSERT_GT(kClasses + label[1], int64_t{1} << 31);
  constexpr float kTarget = 5.0f;
  x.data()[kClasses + label[1]] = from_float<bf16>(kTarget);
  float loss[2] = {0, 0};
  float lse[2] = {0, 0};
  float rw[2] = {0, 0};
  const float g[2] = {1, 1};
  const test_util::SoftmaxCEInputs<bf16, int64_t> in{x.data(), label, nullptr};
  ASSERT_EQ(test_util::fwd_cuda(p, in, loss, lse, rw, emu_test::test_stream()), 0)
      << cuda_emu::last_failure();
  const double log_c = std::log(static_cast<double>(kClasses));
  for (int r = 0; r < 2; ++r) {
    // fp32 sums of 2^30 ones in per-thread parts: exact within a thread, ~1e-7 relative after
    // the block's merge
    EXPECT_NEAR(lse[r], log_c, 1e-5) << "row " << r;
    EXPECT_NEAR(loss[r], r == 0 ? log_c : log_c - kTarget, 1e-5) << "row " << r;
  }
  ASSERT_EQ(test_util::bwd_cuda(p, in, lse, g, grad.data(), emu_test::test_stream()), 0)
      << cuda_emu::last_failure();
  const float inv_c = static_cast<float>(1.0 / static_cast<double>(kClasses));
  const bf16 off = from_float<bf16>(inv_c);
  const bf16 on = from_float<bf16>(inv_c - 1.0f);
  int64_t wrong = 0;
  int64_t first_wrong = -1;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = i / kClasses;
    const bf16 want = i - r * kClasses == label[r] ? on : off;
    if (grad.data()[i].bits != want.bits) {
      if (first_wrong < 0) first_wrong = i;
      ++wrong;
    }
  }
  EXPECT_EQ(wrong, 0) << "first at element " << first_wrong;
}

}  // namespace
}  // namespace paddle_ops
