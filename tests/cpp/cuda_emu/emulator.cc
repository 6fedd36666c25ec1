// The fiber scheduler behind cuda_runtime.h (see there for what is emulated and what is not).
#include <sys/mman.h>
#include <unistd.h>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "cuda_runtime.h"

#if defined(__SANITIZE_ADDRESS__)
#define CUDA_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CUDA_EMU_ASAN 1
#endif
#endif
#if defined(CUDA_EMU_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if defined(CUDA_EMU_ASAN)
// ASan's fake stacks (detect_stack_use_after_return, on by default in newer compilers) would be
// made per fiber and never freed: a finished or abandoned fiber never makes the final switch
// that destroys its fake stack, and its locals would not live on the stack that start() resets.
extern "C" const char* __asan_default_options() { return "detect_stack_use_after_return=0"; }
#endif

namespace cuda_emu {
namespace {

// ---- switching stacks ------------------------------------------------------------------------

#if defined(__x86_64__)
// Saves what the SysV ABI has a call preserve (rbx, rbp, r12-r15; the return address is on the
// stack), stores the stack pointer to *save_sp, loads next_sp and returns into whatever that
// stack saved. glibc's swapcontext also saves and restores the signal mask, a system call per
// switch that was most of the emulator's time.
extern "C" void cuda_emu_switch(void** save_sp, void* next_sp);
asm(R"(
  .text
  .p2align 4
  .type cuda_emu_switch, @function
cuda_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size cuda_emu_switch, .-cuda_emu_switch
)");

struct Context {
  void* sp = nullptr;
};

void switch_context(Context& from, const Context& to) { cuda_emu_switch(&from.sp, to.sp); }

// A context that starts fn() on [stack, stack + bytes): the six registers cuda_emu_switch pops,
// fn as the address its `ret` jumps to, and a slot where fn's own return address would be, so
// that fn starts with the stack pointer 8 bytes below a 16-byte boundary, as after a call. fn
// never returns.
void make_context(Context& c, char* stack, std::size_t bytes, void (*fn)()) {
  auto top = reinterpret_cast<uintptr_t>(stack + bytes) & ~uintptr_t{15};
  void** sp = reinterpret_cast<void**>(top);
  *--sp = nullptr;
  *--sp = reinterpret_cast<void*>(fn);
  for (int k = 0; k < 6; ++k) *--sp = nullptr;
  c.sp = sp;
}
#else
struct Context {
  ucontext_t uc;
};

void switch_context(Context& from, const Context& to) { swapcontext(&from.uc, &to.uc); }

void make_context(Context& c, char* stack, std::size_t bytes, void (*fn)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = bytes;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, fn, 0);
  // makecontext has put the stack into the saved registers; uc_stack is only a record of it.
  // ASan's swapcontext interceptor clears the shadow of the target's uc_stack on every switch,
  // which start() below does once, for the part that needs it.
  c.uc.uc_stack.ss_sp = nullptr;
  c.uc.uc_stack.ss_size = 0;
}
#endif

// ---- the emulated device ---------------------------------------------------------------------

// Per fiber. The kernels' frames are small (a few 16-byte vectors per thread), but ASan's
// redzones make every frame larger; a guard page below each stack turns an overflow into a crash.
constexpr std::size_t kStackBytes = std::size_t{256} << 10;
constexpr int kMaxBlockThreads = 1024;
constexpr unsigned kMaxGridX = 0x7fffffffu;
constexpr unsigned kMaxGridYZ = 65535;

struct Fiber {
  Context context;
  uint3 tid{0, 0, 0};
  int linear = 0;
  bool done = false;
  // The barrier this fiber waits at (nullptr while running): named in a deadlock report.
  const char* waiting = nullptr;
  // Shuffles this lane has done; its parity picks the warp's exchange buffer (see shuffle).
  uint64_t shuffles = 0;
  char* stack = nullptr;
  void* fake_stack = nullptr;  // ASan's, while switched out
  // The stack pointer at this fiber's last switch, about: the frames above it may still be live
  // when the fiber is abandoned (see start).
  const char* last_switch_sp = nullptr;
};

struct Warp {
  int size = 0;
  int arrived = 0;
  uint64_t generation = 0;
  uint64_t slots[2][32] = {};
  int widths[2][32] = {};
};

struct Block {
  dim3 grid;
  dim3 dims;
  uint3 idx{0, 0, 0};
  int threads = 0;
  int arrived = 0;
  uint64_t generation = 0;
  std::vector<Warp> warps;
  const std::function<void()>* body = nullptr;
  // Set whenever a fiber arrives at or passes a barrier, or returns: a whole round of resumes
  // without it means every live fiber waits at a barrier that can no longer complete.
  bool progress = false;
  std::string failure;
};

struct SharedRegion {
  void* p;
  std::size_t bytes;
};

struct State {
  std::vector<Fiber> fibers;
  // The __shared__ arrays met so far (translate.cmake registers each where it is declared).
  std::vector<SharedRegion> shared;
  Block block;
  Fiber* current = nullptr;
  Context scheduler;
  const void* scheduler_stack = nullptr;
  std::size_t scheduler_stack_size = 0;
  void* scheduler_fake_stack = nullptr;
  Order order = Order::kForward;
  std::vector<Launch> log;
  std::string last_failure;
  cudaError_t last_error = cudaSuccess;

  State() : fibers(kMaxBlockThreads) {
    const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    const std::size_t each = kStackBytes + page;
    void* mem = mmap(nullptr, each * kMaxBlockThreads, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) {
      std::perror("cuda_emu: mmap of the fiber stacks");
      std::abort();
    }
    char* base = static_cast<char*>(mem);
    for (int k = 0; k < kMaxBlockThreads; ++k) {
      char* guard = base + each * static_cast<std::size_t>(k);
      if (mprotect(guard, page, PROT_NONE) != 0) {
        std::perror("cuda_emu: mprotect of a guard page");
        std::abort();
      }
      fibers[static_cast<std::size_t>(k)].stack = guard + page;
    }
  }
};

State& state() {
  static State s;
  return s;
}

Fiber& running(const char* what) {
  Fiber* f = state().current;
  if (f == nullptr) {
    std::fprintf(stderr, "cuda_emu: %s outside a kernel\n", what);
    std::abort();
  }
  return *f;
}

// Back to the scheduler; returns when the scheduler resumes this fiber.
void yield() {
  State& s = state();
  Fiber& f = *s.current;
  f.last_switch_sp = static_cast<const char*>(__builtin_frame_address(0));
#if defined(CUDA_EMU_ASAN)
  __sanitizer_start_switch_fiber(&f.fake_stack, s.scheduler_stack, s.scheduler_stack_size);
#endif
  switch_context(f.context, s.scheduler);
#if defined(CUDA_EMU_ASAN)
  __sanitizer_finish_switch_fiber(f.fake_stack, &s.scheduler_stack, &s.scheduler_stack_size);
#endif
}

// Ends the launch from inside a kernel: the scheduler sees the failure after this fiber's next
// switch and never resumes any fiber of the block again. The message is formatted on the stack:
// the abandoned frames are never unwound, so a heap string there would leak.
[[noreturn]] __attribute__((format(printf, 1, 2))) void fail(const char* format, ...) {
  State& s = state();
  const Fiber& f = running("a failure");
  char why[256];
  va_list args;
  va_start(args, format);
  std::vsnprintf(why, sizeof why, format, args);
  va_end(args);
  if (s.block.failure.empty()) {
    char text[320];
    std::snprintf(text, sizeof text, "thread (%u,%u,%u): %s", f.tid.x, f.tid.y, f.tid.z, why);
    s.block.failure = text;
  }
  for (;;) yield();
}

void entry() {
  State& s = state();
  Fiber& f = *s.current;
#if defined(CUDA_EMU_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, &s.scheduler_stack, &s.scheduler_stack_size);
#endif
  (*s.block.body)();
  f.done = true;
  s.block.progress = true;
  // A finished fiber is never resumed; its stack is reset before the next block reuses it.
  for (;;) yield();
}

void resume(Fiber& f) {
  State& s = state();
  s.current = &f;
#if defined(CUDA_EMU_ASAN)
  __sanitizer_start_switch_fiber(&s.scheduler_fake_stack, f.stack, kStackBytes);
#endif
  switch_context(s.scheduler, f.context);
#if defined(CUDA_EMU_ASAN)
  __sanitizer_finish_switch_fiber(s.scheduler_fake_stack, nullptr, nullptr);
#endif
  s.current = nullptr;
}

void start(Fiber& f) {
#if defined(CUDA_EMU_ASAN)
  // A fiber abandoned inside its frames (finished, or stopped by a failure) left ASan's redzones
  // of the frames that were live at its last switch poisoned; every deeper frame had returned
  // and unpoisoned its own. Only that part is unpoisoned (with a page of slack for yield's own
  // frame and the switch's).
  if (f.last_switch_sp != nullptr) {
    const std::size_t page = 4096;
    const char* low = f.last_switch_sp - page > f.stack ? f.last_switch_sp - page : f.stack;
    __asan_unpoison_memory_region(low, static_cast<std::size_t>(f.stack + kStackBytes - low));
  }
#endif
  f.last_switch_sp = nullptr;
  make_context(f.context, f.stack, kStackBytes, entry);
  f.done = false;
  f.waiting = nullptr;
  f.shuffles = 0;
  f.fake_stack = nullptr;
}

std::string describe_deadlock(const Block& b, const std::vector<Fiber>& fibers) {
  std::ostringstream text;
  int exited = 0;
  int first_exited = -1;
  for (int k = 0; k < b.threads; ++k) {
    if (fibers[static_cast<std::size_t>(k)].done) {
      if (first_exited < 0) first_exited = k;
      ++exited;
    }
  }
  text << "deadlock: no thread can pass its barrier";
  if (exited > 0) {
    text << "; " << exited << " threads have returned (the first: " << first_exited << ")";
  }
  int shown = 0;
  for (int k = 0; k < b.threads && shown < 4; ++k) {
    const Fiber& f = fibers[static_cast<std::size_t>(k)];
    if (f.done || f.waiting == nullptr) continue;
    text << "; thread " << k << " waits at " << f.waiting;
    ++shown;
  }
  return text.str();
}

// Runs one block to completion; false (with b.failure set) when it fails.
bool run_block(State& s) {
  Block& b = s.block;
  // A block's shared memory starts as garbage on a GPU: all-ones bytes here (NaN in every float
  // type, -1 in every integer), so a read before the block's own write shows.
  for (const SharedRegion& r : s.shared) std::memset(r.p, 0xff, r.bytes);
  b.arrived = 0;
  b.generation = 0;
  b.failure.clear();
  b.warps.assign(static_cast<std::size_t>((b.threads + 31) / 32), Warp{});
  for (int k = 0; k < b.threads; ++k) {
    Fiber& f = s.fibers[static_cast<std::size_t>(k)];
    f.linear = k;
    f.tid =
        uint3{static_cast<unsigned>(k) % b.dims.x, static_cast<unsigned>(k) / b.dims.x % b.dims.y,
              static_cast<unsigned>(k) / (b.dims.x * b.dims.y)};
    b.warps[static_cast<std::size_t>(k / 32)].size += 1;
    start(f);
  }
  int live = b.threads;
  while (live > 0) {
    b.progress = false;
    for (int n = 0; n < b.threads; ++n) {
      const int k = s.order == Order::kForward ? n : b.threads - 1 - n;
      Fiber& f = s.fibers[static_cast<std::size_t>(k)];
      if (f.done) continue;
      resume(f);
      if (!b.failure.empty()) return false;
      if (f.done) --live;
    }
    if (live > 0 && !b.progress) {
      b.failure = describe_deadlock(b, s.fibers);
      return false;
    }
  }
  return true;
}

void warp_barrier(Warp& w) {
  State& s = state();
  Fiber& f = *s.current;
  s.block.progress = true;
  const uint64_t generation = w.generation;
  if (++w.arrived == w.size) {
    w.arrived = 0;
    ++w.generation;
    return;
  }
  f.waiting = "a warp shuffle";
  do {
    yield();
  } while (w.generation == generation);
  f.waiting = nullptr;
  s.block.progress = true;
}

}  // namespace

const uint3& thread_idx() { return running("threadIdx").tid; }
const uint3& block_idx() {
  running("blockIdx");
  return state().block.idx;
}
const dim3& block_dim() {
  running("blockDim");
  return state().block.dims;
}
const dim3& grid_dim() {
  running("gridDim");
  return state().block.grid;
}

void syncthreads() {
  State& s = state();
  Fiber& f = running("__syncthreads");
  Block& b = s.block;
  b.progress = true;
  const uint64_t generation = b.generation;
  if (++b.arrived == b.threads) {
    b.arrived = 0;
    ++b.generation;
    return;
  }
  f.waiting = "__syncthreads";
  do {
    yield();
  } while (b.generation == generation);
  f.waiting = nullptr;
  b.progress = true;
}

uint64_t shuffle(unsigned mask, uint64_t bits, Shuffle kind, int arg, int width) {
  State& s = state();
  Fiber& f = running("a warp shuffle");
  if (mask != 0xffffffffu) fail("a shuffle with a partial mask (not emulated)");
  if (width < 1 || width > 32 || (width & (width - 1)) != 0) {
    fail("shuffle width %d is not a power of 2 in [1, 32]", width);
  }
  Warp& w = s.block.warps[static_cast<std::size_t>(f.linear / 32)];
  const int lane = f.linear % 32;
  if (w.size != 32) {
    fail("a full-mask shuffle in a warp of %d threads", w.size);
  }
  // Two exchange buffers used alternately: a lane can only write a buffer again after the next
  // barrier, which every lane reaches only after reading this one.
  const int buffer = static_cast<int>(f.shuffles++ & 1u);
  w.slots[buffer][lane] = bits;
  w.widths[buffer][lane] = width;
  warp_barrier(w);
  const int segment = lane & ~(width - 1);
  int src = lane;
  if (kind == Shuffle::kIndex) {
    src = segment + (arg & (width - 1));
  } else if (arg >= 0 && lane - segment + arg < width) {
    src = lane + arg;
  }
  if (w.widths[buffer][src] != width) {
    fail("lanes %d and %d shuffle with different widths", lane, src);
  }
  return w.slots[buffer][src];
}

void launch_bounds(int declared) {
  running("a kernel");
  const int threads = state().block.threads;
  if (declared > 0 && threads > declared) {
    fail("a block of %d threads, over the kernel's __launch_bounds__(%d)", threads, declared);
  }
  if (declared <= 0 && threads > 256) {
    fail(
        "a block of %d threads for a kernel without __launch_bounds__ (up to 255 registers "
        "per thread: only blocks of up to 256 threads surely launch)",
        threads);
  }
}

void check_aligned(const void* p, std::size_t align, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % align != 0) {
    fail("%s of %p, not aligned to %zu bytes", what, p, align);
  }
}

void shared_region(void* p, std::size_t bytes) {
  State& s = state();
  for (const SharedRegion& r : s.shared) {
    if (r.p == p) return;
  }
  // First met in this block, by the first thread to reach the declaration, before any write.
  std::memset(p, 0xff, bytes);
  s.shared.push_back(SharedRegion{p, bytes});
}

void set_order(Order order) { state().order = order; }

const std::vector<Launch>& log() { return state().log; }

void clear_log() {
  State& s = state();
  s.log.clear();
  s.last_failure.clear();
  s.last_error = cudaSuccess;
}

const std::string& last_failure() { return state().last_failure; }

void launch(const Config& c, const std::function<void()>& body) {
  State& s = state();
  s.log.push_back(Launch{c.grid, c.block, c.stream, false});
  std::string invalid = c.invalid;
  const uint64_t threads = uint64_t{c.block.x} * c.block.y * c.block.z;
  if (threads == 0 || threads > kMaxBlockThreads || c.block.z > 64) {
    invalid += "block (" + std::to_string(c.block.x) + "," + std::to_string(c.block.y) + "," +
               std::to_string(c.block.z) + ") is not 1 to 1024 threads; ";
  }
  if (c.grid.x == 0 || c.grid.x > kMaxGridX || c.grid.y == 0 || c.grid.y > kMaxGridYZ ||
      c.grid.z == 0 || c.grid.z > kMaxGridYZ) {
    invalid += "grid (" + std::to_string(c.grid.x) + "," + std::to_string(c.grid.y) + "," +
               std::to_string(c.grid.z) + ") is out of range; ";
  }
  if (!invalid.empty()) {
    s.last_error = cudaErrorInvalidConfiguration;
    s.last_failure = "invalid launch: " + invalid;
    std::fprintf(stderr, "cuda_emu: %s\n", s.last_failure.c_str());
    return;
  }
  Block& b = s.block;
  b.grid = c.grid;
  b.dims = c.block;
  b.threads = static_cast<int>(threads);
  b.body = &body;
  // Blocks in grid order, or backwards with Order::kReverse: a result that depends on the order
  // in which blocks run (two blocks writing one element) differs between the two.
  const bool reverse = s.order == Order::kReverse;
  for (unsigned zi = 0; zi < c.grid.z; ++zi) {
    for (unsigned yi = 0; yi < c.grid.y; ++yi) {
      for (unsigned xi = 0; xi < c.grid.x; ++xi) {
        const unsigned x = reverse ? c.grid.x - 1 - xi : xi;
        const unsigned y = reverse ? c.grid.y - 1 - yi : yi;
        const unsigned z = reverse ? c.grid.z - 1 - zi : zi;
        b.idx = uint3{x, y, z};
        if (!run_block(s)) {
          std::ostringstream text;
          text << "block (" << x << "," << y << "," << z << "), " << b.failure;
          s.last_error = cudaErrorLaunchFailure;
          s.last_failure = text.str();
          std::fprintf(stderr, "cuda_emu: launch failed: %s\n", s.last_failure.c_str());
          return;
        }
      }
    }
  }
}

void memset_async(void* p, int value, std::size_t bytes, cudaStream_t stream) {
  state().log.push_back(Launch{dim3(), dim3(), stream, true});
  std::memset(p, value, bytes);
}

}  // namespace cuda_emu

cudaError_t cudaGetLastError() {
  cuda_emu::State& s = cuda_emu::state();
  const cudaError_t e = s.last_error;
  s.last_error = cudaSuccess;
  return e;
}
