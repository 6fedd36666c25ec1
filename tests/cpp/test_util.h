// Helpers shared by the kernel tests (test_softmax_ce.cc, test_kl.cc, test_binary.cc, ...):
// storing and decoding the kernels' element types, naming them and the test cases for test ids,
// and comparing results with a long-double reference.
//
// 16-bit values are stored with from_float and decoded with to_float (both checked bit-exactly in
// test_dtypes.cc); nothing here uses the kernels' own math helpers.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "dtypes.h"
#include "positional_launchers.h"

namespace paddle_ops {
namespace test_util {

using LD = long double;

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
inline float f32(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

inline uint32_t bits32(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

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

// got matches want to within tol; a NaN want needs a NaN, an infinite one the same infinity.
inline bool close(LD got, LD want, LD tol) {
  if (std::isnan(want)) return std::isnan(got);
  if (std::isinf(want)) return got == want;
  return std::fabs(got - want) <= tol;
}

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

// Two vectors of equal length and identical bytes (the thread-count determinism tests).
template <typename V>
bool same_bits(const V& a, const V& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(a[0])) == 0);
}

// gtest ids and type lists shared by the kernel tests.

// The float element types of every kernel.
using FloatTypes = ::testing::Types<float, double, fp16, bf16>;

// (logits type, hard label type) of every hard-label kernel.
using HardLabelPairs = ::testing::Types<std::pair<float, int32_t>, std::pair<float, int64_t>,
                                        std::pair<double, int32_t>, std::pair<double, int64_t>,
                                        std::pair<fp16, int32_t>, std::pair<fp16, int64_t>,
                                        std::pair<bf16, int32_t>, std::pair<bf16, int64_t>>;

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
