// Helpers shared by the kernel tests (test_softmax_ce.cc, test_kl.cc, test_binary.cc, ...) and the
// emulated CUDA tests (cuda/test_*_cuda.cc): storing and decoding the kernels' element types,
// buffers, naming types and cases for test ids, the options of the test cases, and comparing
// results with a long-double reference or bit for bit.
//
// 16-bit values are stored with from_float and decoded with to_float (both checked bit-exactly in
// test_dtypes.cc); nothing here uses the kernels' own math helpers.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <memory>
#include <ostream>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "dtypes.h"

namespace paddle_ops {
namespace test_util {

using LD = long double;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// A type T as a value, so that a generic lambda can take it.
template <typename T>
struct Tag {
  using type = T;
};

// T where a parameter must not take part in deducing T, so that nullptr can be passed for it.
template <typename T>
using NoDeduce = typename Tag<T>::type;

// v stored as a T: a plain conversion for fp32 / fp64, from_float for the 16-bit types.
template <typename T>
T encode(double v) {
  if constexpr (std::is_same<T, double>::value || std::is_same<T, float>::value) {
    return static_cast<T>(v);
  } else {
    return from_float<T>(static_cast<float>(v));
  }
}

// A stored T decoded exactly into long double.
template <typename T>
LD value(T v) {
  return static_cast<LD>(to_float(v));
}

// The fp32 with bit pattern `bits`, and the bit pattern of an fp32.
inline float f32(uint32_t bits) { return bits_float(bits); }
inline uint32_t bits32(float f) { return float_bits(f); }

// Short type names for test ids.
template <typename T>
std::string type_name() {
  if constexpr (std::is_same<T, float>::value) {
    return "f32";
  } else if constexpr (std::is_same<T, double>::value) {
    return "f64";
  } else if constexpr (std::is_same<T, fp16>::value) {
    return "f16";
  } else if constexpr (std::is_same<T, bf16>::value) {
    return "bf16";
  } else if constexpr (std::is_same<T, int32_t>::value) {
    return "i32";
  } else {
    static_assert(std::is_same<T, int64_t>::value, "no name for this type");
    return "i64";
  }
}

// The position of a float type in FloatTypes: the tests that run a costly problem in one mode or
// layout per type rotate the choice by it.
template <typename T>
int type_slot() {
  if constexpr (std::is_same<T, float>::value) {
    return 0;
  } else if constexpr (std::is_same<T, double>::value) {
    return 1;
  } else if constexpr (std::is_same<T, fp16>::value) {
    return 2;
  } else {
    static_assert(std::is_same<T, bf16>::value, "not a float type");
    return 3;
  }
}

// got matches want to within tol; a NaN want needs a NaN, an infinite one the same infinity.
inline bool close(LD got, LD want, LD tol) {
  if (std::isnan(want)) return std::isnan(got);
  if (std::isinf(want)) return got == want;
  return std::fabs(got - want) <= tol;
}

// The largest error of a sweep and the input it occurred at; a NaN error counts as the largest.
struct WorstError {
  LD err = 0;
  float at = 0;

  void add(float x, LD e) {
    if (!(e <= err)) {
      err = e;
      at = x;
    }
  }
};

// Collects mismatches and reports the first few, so that a broken kernel prints a readable
// failure rather than thousands.
class Mismatches {
 public:
  void check(const char* what, int64_t index, LD got, LD want, LD tol) {
    if (close(got, want, tol)) return;
    if (++count_ <= 8) {
      text_ << "\n  " << what << "[" << index << "]: got " << static_cast<double>(got) << ", want "
            << static_cast<double>(want) << " (tol " << static_cast<double>(tol) << ")";
    }
  }
  ::testing::AssertionResult result() const {
    if (count_ == 0) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << count_ << " mismatches:" << text_.str();
  }

 private:
  int64_t count_ = 0;
  std::ostringstream text_;
};

// n elements that start `offset` elements into their own heap block of exactly n + offset, so
// that ASan reports a read or write past either end and offset 1 misaligns every 16-byte vector.
// An empty buffer's data() is nullptr: the launchers' "absent" argument.
template <typename E>
class Buffer {
 public:
  explicit Buffer(int64_t n = 0, int64_t offset = 0)
      : n_(n), offset_(offset), storage_(new E[static_cast<std::size_t>(n + offset)]()) {}
  // A copy has the same elements at the same offset, in a block of its own.
  Buffer(const Buffer& other) : Buffer(other.n_, other.offset_) {
    std::copy(other.storage_.get(), other.storage_.get() + n_ + offset_, storage_.get());
  }
  Buffer& operator=(const Buffer& other) { return *this = Buffer(other); }
  Buffer(Buffer&&) = default;
  Buffer& operator=(Buffer&&) = default;
  E* data() { return n_ == 0 ? nullptr : storage_.get() + offset_; }
  const E* data() const { return n_ == 0 ? nullptr : storage_.get() + offset_; }
  E& operator[](int64_t i) { return storage_[static_cast<std::size_t>(offset_ + i)]; }
  const E& operator[](int64_t i) const { return storage_[static_cast<std::size_t>(offset_ + i)]; }
  int64_t size() const { return n_; }
  void fill(E v) {
    for (int64_t i = 0; i < n_; ++i) (*this)[i] = v;
  }
  // The elements, as a vector (for bitwise comparisons; not for bool).
  std::vector<E> values() const { return std::vector<E>(data(), data() + n_); }

 private:
  int64_t n_;
  int64_t offset_;
  std::unique_ptr<E[]> storage_;
};

// Two vectors (or buffers) of equal length and identical bytes.
template <typename V>
bool same_bits(const V& a, const V& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(a[0])) == 0);
}

template <typename E>
bool same_bits(const Buffer<E>& a, const Buffer<E>& b) {
  return same_bits(a.values(), b.values());
}

// Each of `fields` (pointers to members of Out) of `a` and `b` bit for bit.
template <typename Out, typename... Fields>
void expect_same_bits(const Out& a, const Out& b, Fields... fields) {
  const bool same[] = {same_bits(a.*fields, b.*fields)...};
  for (size_t k = 0; k < sizeof...(fields); ++k) EXPECT_TRUE(same[k]) << "field " << k;
}

// Whether outputs carry a launcher's status (SoftmaxCEStatus), which must then be ok.
template <typename Out, typename = void>
struct HasStatus : std::false_type {};
template <typename Out>
struct HasStatus<Out, std::void_t<decltype(std::declval<Out>().status.ok())>> : std::true_type {};

// run(pr) with pr.p.num_threads 1 (the reference), then 2, 3 and 7, the thread counts of the
// determinism tests: `fields` of its outputs bitwise equal every time.
template <typename Problem, typename Run, typename... Fields>
void expect_same_bits_for_any_thread_count(Problem& pr, Run run, Fields... fields) {
  const auto run_with = [&](int threads) {
    pr.p.num_threads = threads;
    const auto out = run(pr);
    if constexpr (HasStatus<std::decay_t<decltype(out)>>::value) {
      EXPECT_TRUE(out.status.ok());
    }
    return out;
  };
  const auto one = run_with(1);
  for (int threads : {2, 3, 7}) {
    SCOPED_TRACE("num_threads = " + std::to_string(threads));
    expect_same_bits(one, run_with(threads), fields...);
  }
}

// case.*field = v, for the one-line option setters of the test cases' builders, which return the
// case so that options chain (Case("x", 4, 5).focal(0.25, 2).soft_labels()). `part` is the case or
// the base class (a family's shared options) that declares the setter.
template <typename Case, typename Part, typename Field, typename V>
Case& set_option(Part& part, Field field, V v) {
  Case& c = static_cast<Case&>(part);
  c.*field = v;
  return c;
}

// options.*field = v for a case whose options include a kernel's params struct (`options`, a
// member of `part`), likewise.
template <typename Case, typename Part, typename Params, typename V>
Case& set_param(Part& part, Params& options, V Params::*field, V v) {
  options.*field = v;
  return static_cast<Case&>(part);
}

// Offset of (row r, class j) in an [outer, classes, inner] tensor; row r is (r / inner, r % inner).
inline int64_t element_at(int64_t classes, int64_t inner, int64_t r, int64_t j) {
  return ((r / inner) * classes + j) * inner + r % inner;
}

// gtest ids and type lists shared by the kernel tests.

template <typename... Ts>
struct TypeList {};

// The float element types of every kernel.
using FloatTypeList = TypeList<float, double, fp16, bf16>;

// (logits type, hard label type) of every hard-label kernel.
using HardLabelPairList =
    TypeList<std::pair<float, int32_t>, std::pair<float, int64_t>, std::pair<double, int32_t>,
             std::pair<double, int64_t>, std::pair<fp16, int32_t>, std::pair<fp16, int64_t>,
             std::pair<bf16, int32_t>, std::pair<bf16, int64_t>>;

template <typename... Ts>
::testing::Types<Ts...> gtest_types(TypeList<Ts...>);

template <typename... As, typename... Bs>
TypeList<As..., Bs...> concat(TypeList<As...>, TypeList<Bs...>);

using FloatTypes = decltype(gtest_types(FloatTypeList{}));
using HardLabelPairs = decltype(gtest_types(HardLabelPairList{}));

// TYPED_TEST_SUITE name generators: "f32", and "f32_i64" for a std::pair.
struct TypeNames {
  template <typename T>
  static std::string GetName(int) {
    return type_name<T>();
  }
};

struct PairNames {
  template <typename P>
  static std::string GetName(int) {
    return type_name<typename P::first_type>() + "_" + type_name<typename P::second_type>();
  }
};

// One instantiation of a family's reference check (the check for one element type, or one pair
// of element and label types), named for test ids.
template <typename Case>
struct Kernel {
  std::string name;
  void (*check)(const Case&);
};

template <typename Case>
std::ostream& operator<<(std::ostream& os, const Kernel<Case>& k) {
  return os << k.name;
}

// The Kernel of each type of the list, named by Names (TypeNames, PairNames, ...) and checked by
// check_of(Tag<type>{}), a pointer to that type's check.
template <typename Case, typename Names, typename... Ts, typename CheckOf>
std::vector<Kernel<Case>> kernels(TypeList<Ts...>, CheckOf check_of) {
  return {Kernel<Case>{Names::template GetName<Ts>(0), check_of(Tag<Ts>{})}...};
}

// The TEST_P fixture of a table-driven suite: every case with every kernel, the kernel's check
// run on the case.
template <typename Case>
class CaseKernelTest : public ::testing::TestWithParam<std::tuple<Case, Kernel<Case>>> {
 protected:
  void run_case() const { std::get<1>(this->GetParam()).check(std::get<0>(this->GetParam())); }
};

// The parameters of a CaseKernelTest suite.
template <typename Cases, typename Kernels>
auto every_case_and_kernel(const Cases& cases, const Kernels& kernels) {
  return ::testing::Combine(::testing::ValuesIn(cases), ::testing::ValuesIn(kernels));
}

// INSTANTIATE_TEST_SUITE_P name generator for Combine(cases, kernels): "<case>_<kernel>", from
// the `name` members of both.
struct CaseKernelName {
  template <typename Param>
  std::string operator()(const ::testing::TestParamInfo<Param>& info) const {
    return std::get<0>(info.param).name + "_" + std::get<1>(info.param).name;
  }
};

}  // namespace test_util
}  // namespace paddle_ops

// A typed test suite: each TYPED_TEST(Suite, ...) runs once per type of `types`, named by
// `names` (TypeNames, PairNames, ...).
#define PO_TYPED_TEST_SUITE(Suite, types, names) \
  template <typename>                            \
  class Suite : public ::testing::Test {};       \
  TYPED_TEST_SUITE(Suite, types, names)

// The table-driven suite prefix/Suite.MatchReference/<case>_<kernel>: every case of `cases` with
// every Kernel of `kernels`, the kernel's check run on the case.
#define PO_CASE_KERNEL_SUITE(prefix, Suite, Case, cases, kernels)                           \
  class Suite : public ::paddle_ops::test_util::CaseKernelTest<Case> {};                    \
  TEST_P(Suite, MatchReference) { run_case(); }                                             \
  INSTANTIATE_TEST_SUITE_P(prefix, Suite,                                                   \
                           ::paddle_ops::test_util::every_case_and_kernel(cases, kernels), \
                           ::paddle_ops::test_util::CaseKernelName())
