// emu.cpp: the CUDA emulation's runtime (tests/cuda_emu/include/cuda_runtime.h) and the block
// scheduler that runs kernels (cuda_emu_device.h).
//
// Memory: cudaMalloc blocks are host memory, 256-byte aligned, filled with 0xff bytes (NaN as
// floats, as garbage would read) and followed by a canary up to the next 256 bytes, checked on
// cudaFree; every copy, memset, cuBLAS matrix and kernel pointer argument must lie in one block.
//
// Kernels: each block's threads are fibers (an x86-64 register switch; ucontext elsewhere),
// given a stack from a pool when they first run and handing it back when they return, so a
// kernel without barriers runs on one stack. The scheduler resumes a random ready thread (the
// order drawn from CMDS_CUDA_EMU_SEED and the launch count: a missing __syncthreads shows as a
// result that changes with the seed) until it returns or waits: at a warp shuffle, released when
// every lane of the mask has come; at __syncthreads, released when every live thread has. No
// ready thread while some live: the deadlock is reported. CMDS_CUDA_EMU_ABORT=1 aborts at the
// first error (for a debugger).
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <string>
#include <mutex>
#include <vector>

#include "cuda_runtime.h"

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

thread_local uint3 threadIdx, blockIdx;
thread_local dim3 blockDim, gridDim;

namespace {

// ---- errors -------------------------------------------------------------------------------
cudaError_t g_last = cudaSuccess;    // cleared by cudaGetLastError
cudaError_t g_sticky = cudaSuccess;  // a failure inside a kernel: every later call returns it
int g_device = 0;

void set_error(cudaError_t e) {
  if (g_last == cudaSuccess) g_last = e;
}

bool abort_on_error() {
  const char *s = getenv("CMDS_CUDA_EMU_ABORT");
  return s && *s && strcmp(s, "0");
}

void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void report(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("cuda-emu: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  if (abort_on_error()) abort();
}

// ---- device memory ------------------------------------------------------------------------
const size_t ALIGN = 256;
const unsigned char CANARY = 0xa5;
struct block_info {
  size_t bytes;   // asked for
  size_t padded;  // bytes rounded up to ALIGN: [bytes, padded) holds the canary
};
std::map<uintptr_t, block_info> g_blocks;
std::mutex g_mem_lock;

// The allocation holding [p, p + n), or NULL (n == 0: p may be the end of a block).
const std::pair<const uintptr_t, block_info> *find_block(const void *p, size_t n) {
  uintptr_t a = (uintptr_t)p;
  auto it = g_blocks.upper_bound(a);
  if (it == g_blocks.begin()) return nullptr;
  --it;
  if (a < it->first || a - it->first > it->second.bytes || n > it->second.bytes - (a - it->first)) return nullptr;
  return &*it;
}

bool check_range(const char *what, const void *p, size_t n) {
  std::lock_guard<std::mutex> g(g_mem_lock);
  if (find_block(p, n)) return true;
  report("%s: %zu bytes at %p are not inside one cudaMalloc block", what, n, p);
  return false;
}

bool is_device(const void *p) {
  std::lock_guard<std::mutex> g(g_mem_lock);
  return find_block(p, 0) != nullptr;
}

// ---- fibers ---------------------------------------------------------------------------------
const size_t STACK_BYTES = 256 * 1024;
enum fstate { F_READY, F_BAR, F_WARP, F_DONE };

struct fiber {
  void *sp = nullptr;  // saved stack pointer (x86-64)
#if !defined(__x86_64__)
  ucontext_t uc;
#endif
  char *stack = nullptr;  // from the pool while the thread has started and not ended
  fstate state = F_READY;
  unsigned shfl_count = 0;  // shuffles done: selects the exchange buffer
  uint3 tid{0, 0, 0};       // its threadIdx
};

struct warp_state {
  unsigned mask = 0;  // of the shuffle some lanes wait at
  int waiting = 0, lanes = 0;
};

struct block_sched {
  std::vector<fiber> fibers;
  std::vector<int> ready;     // threads that can run: not started, or released from a barrier
  std::vector<char *> stacks; // free stacks (a thread takes one when it starts)
  void *sched_sp = nullptr;
#if !defined(__x86_64__)
  ucontext_t sched_uc;
#endif
  int cur = -1, nthreads = 0, live = 0, at_barrier = 0;
  warp_state warps[32];
  uint64_t xchg[32][2][32];  // per warp, two alternating buffers, per lane
  uint64_t rng = 0;
  void (*body)(void *) = nullptr;
  void *ctx = nullptr;
  bool failed = false;
};
thread_local block_sched *t_sched = nullptr;
uint64_t g_resumes = 0;

#if defined(__x86_64__)
// cmds_emu_switch(save, to): saves the callee-saved registers on the current stack, stores the
// stack pointer in *save and resumes the stack `to`. MXCSR and the x87 control word are not
// switched: every fiber runs with the host thread's (kernels do not change them).
extern "C" void cmds_emu_switch(void **save, void *to);
asm(R"(
  .text
  .globl cmds_emu_switch
  .type cmds_emu_switch, @function
cmds_emu_switch:
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
  .size cmds_emu_switch, .-cmds_emu_switch
)");
#endif

void fiber_yield() {
  block_sched *s = t_sched;
  fiber &f = s->fibers[(size_t)s->cur];
#if defined(__x86_64__)
  cmds_emu_switch(&f.sp, s->sched_sp);
#else
  swapcontext(&f.uc, &s->sched_uc);
#endif
}

uint64_t mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

void make_ready(block_sched &s, int t) {
  s.fibers[(size_t)t].state = F_READY;
  s.ready.push_back(t);
}

// A kernel error inside a thread: reported, and the block stops (the thread never resumes).
void kernel_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void thread_fails(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// Every live thread waits at __syncthreads: all go on. A thread that has ended without reaching
// it is an error: the barrier is in code only part of the block runs (an early return before a
// barrier included), which CUDA leaves undefined and which hangs on GPUs before Volta.
void release_barrier_if_all(block_sched &s) {
  if (!s.at_barrier || s.at_barrier < s.live) return;
  if (s.live < s.nthreads) {
    int gone = -1;
    for (int t = 0; t < s.nthreads && gone < 0; t++)
      if (s.fibers[(size_t)t].state == F_DONE) gone = t;
    kernel_error("__syncthreads reached by %d of %d threads: thread %d ended without reaching it", s.at_barrier,
                 s.nthreads, gone);
    s.failed = true;
    return;
  }
  s.at_barrier = 0;
  for (int t = 0; t < s.nthreads; t++)
    if (s.fibers[(size_t)t].state == F_BAR) make_ready(s, t);
}

extern "C" void cmds_emu_fiber_main(void) {
  block_sched *s = t_sched;
  s->body(s->ctx);
  int t = s->cur, w = t / 32, lane = t % 32;
  s->fibers[(size_t)t].state = F_DONE;
  s->live--;
  if (s->warps[w].waiting && (s->warps[w].mask >> lane & 1u))
    thread_fails("thread %d exits while its warp waits for it at a shuffle (mask 0x%08x)", t, s->warps[w].mask);
  release_barrier_if_all(*s);
  fiber_yield();
  abort();  // never resumed
}

char *new_stack() {
  long pg = sysconf(_SC_PAGESIZE);
  void *m = mmap(nullptr, STACK_BYTES + (size_t)pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
  if (m == MAP_FAILED) {
    perror("cuda-emu: fiber stack");
    abort();
  }
  mprotect(m, (size_t)pg, PROT_NONE);  // guard page: a stack overflow faults
  return (char *)m + pg;
}

void fiber_start(block_sched &s, fiber &f) {
  if (s.stacks.empty()) s.stacks.push_back(new_stack());
  f.stack = s.stacks.back();
  s.stacks.pop_back();
#if defined(__x86_64__)
  // What cmds_emu_switch pops: r15..rbp, then the return address (fiber main). At the entry of
  // cmds_emu_fiber_main rsp must be 8 mod 16, as after a call.
  uintptr_t top = ((uintptr_t)(f.stack + STACK_BYTES) & ~(uintptr_t)15) - 16;
  uint64_t *sp = (uint64_t *)top;
  *--sp = 0;  // fake return address of fiber main (it never returns); keeps the alignment
  *--sp = (uint64_t)(uintptr_t)&cmds_emu_fiber_main;
  for (int i = 0; i < 6; i++) *--sp = 0;
  f.sp = sp;
#else
  getcontext(&f.uc);
  f.uc.uc_stack.ss_sp = f.stack;
  f.uc.uc_stack.ss_size = STACK_BYTES;
  f.uc.uc_link = nullptr;
  makecontext(&f.uc, (void (*)(void))cmds_emu_fiber_main, 0);
#endif
}

void resume(block_sched &s, int t) {
  fiber &f = s.fibers[(size_t)t];
  if (!f.stack) fiber_start(s, f);
  s.cur = t;
  g_resumes++;
  threadIdx = f.tid;
#if defined(__x86_64__)
  cmds_emu_switch(&s.sched_sp, f.sp);
#else
  swapcontext(&s.sched_uc, &f.uc);
#endif
  s.cur = -1;
  if (f.state == F_DONE) {  // its stack is free again
    s.stacks.push_back(f.stack);
    f.stack = nullptr;
  }
}

// ---- launches -------------------------------------------------------------------------------
struct launch_site {
  const char *name = "?", *file = "?";
  int line = 0;
};
thread_local launch_site t_site;
uint64_t g_launches = 0;

// CMDS_CUDA_EMU_STATS=1: at exit, per launch site, launches, threads and thread resumes (where
// an emulated run spends its time).
struct site_stats {
  uint64_t launches = 0, threads = 0, resumes = 0;
};
std::map<std::pair<const char *, int>, site_stats> *g_stats = nullptr;

void print_stats() {
  std::vector<std::pair<uint64_t, std::string>> rows;
  for (auto &kv : *g_stats) {
    char b[300];
    snprintf(b, sizeof b, "%12llu resumes %12llu threads %8llu launches  %s:%d", (unsigned long long)kv.second.resumes,
             (unsigned long long)kv.second.threads, (unsigned long long)kv.second.launches, kv.first.first,
             kv.first.second);
    rows.push_back({kv.second.resumes, b});
  }
  std::sort(rows.begin(), rows.end(), [](auto &a, auto &b) { return a.first > b.first; });
  fprintf(stderr, "cuda-emu: launch sites by thread resumes:\n");
  for (auto &r : rows) fprintf(stderr, "  %s\n", r.second.c_str());
}

uint64_t seed() {
  const char *s = getenv("CMDS_CUDA_EMU_SEED");
  return s ? strtoull(s, nullptr, 0) : 1;
}

void vkernel_error(const char *fmt, va_list ap) {
  char msg[512];
  vsnprintf(msg, sizeof msg, fmt, ap);
  report("kernel %s (%s:%d), block (%u, %u, %u): %s", t_site.name, t_site.file, t_site.line, blockIdx.x,
         blockIdx.y, blockIdx.z, msg);
  g_sticky = cudaErrorLaunchFailure;
  set_error(cudaErrorLaunchFailure);
}

void kernel_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vkernel_error(fmt, ap);
  va_end(ap);
}

void thread_fails(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vkernel_error(fmt, ap);
  va_end(ap);
  t_sched->failed = true;
  fiber_yield();  // never resumed
  abort();
}

const char *state_name(fstate s) {
  return s == F_BAR ? "__syncthreads" : s == F_WARP ? "a warp shuffle" : s == F_DONE ? "exit" : "running";
}

// Runs one block to the end: a random ready thread at a time. False when it cannot finish
// (the error is reported).
bool run_block(block_sched &s, uint64_t order_seed) {
  int n = s.nthreads;
  s.ready.clear();
  for (int t = 0; t < n; t++) {
    fiber &f = s.fibers[(size_t)t];
    if (f.stack) s.stacks.push_back(f.stack);  // left by a block that failed
    f.stack = nullptr;
    f.shfl_count = 0;
    make_ready(s, t);
  }
  s.live = n;
  s.at_barrier = 0;
  for (auto &w : s.warps) w = warp_state{};
  s.rng = order_seed;
  while (!s.ready.empty()) {
    s.rng = mix(s.rng);
    size_t i = (size_t)(((unsigned __int128)s.rng * s.ready.size()) >> 64);  // uniform in [0, size)
    int t = s.ready[i];
    s.ready[i] = s.ready.back();
    s.ready.pop_back();
    resume(s, t);
    if (s.failed) return false;
  }
  if (!s.live) return true;
  // Nothing can go on: name two threads that wait at different places.
  int a = -1, b = -1;
  for (int t = 0; t < n; t++) {
    if (s.fibers[(size_t)t].state == F_DONE) continue;
    if (a < 0)
      a = t;
    else if (s.fibers[(size_t)t].state != s.fibers[(size_t)a].state) {
      b = t;
      break;
    }
  }
  if (b < 0 && s.fibers[(size_t)a].state == F_WARP)
    kernel_error("deadlock: thread %d waits at a warp shuffle (mask 0x%08x) that the rest of its warp does not reach", a,
                 s.warps[a / 32].mask);
  else if (b < 0)
    kernel_error("deadlock: thread %d waits at %s", a, state_name(s.fibers[(size_t)a].state));
  else
    kernel_error("deadlock: thread %d waits at %s while thread %d waits at %s", a, state_name(s.fibers[(size_t)a].state),
                 b, state_name(s.fibers[(size_t)b].state));
  return false;
}

thread_local block_sched *t_pool = nullptr;  // fibers and stacks kept between launches

block_sched *current_thread(const char *what) {
  block_sched *s = t_sched;
  if (!s || s->cur < 0) {
    report("%s called outside a kernel", what);
    abort();
  }
  return s;
}

}  // namespace

// ---- device-side calls ------------------------------------------------------------------------
extern "C" void __syncthreads(void) {
  block_sched *s = current_thread("__syncthreads");
  s->fibers[(size_t)s->cur].state = F_BAR;
  s->at_barrier++;
  release_barrier_if_all(*s);
  fiber_yield();
}

uint64_t cmds_emu::shfl(unsigned mask, uint64_t v, shfl_kind kind, int arg, int width) {
  block_sched *s = current_thread("a warp shuffle");
  int t = s->cur, w = t / 32, lane = t % 32, l0 = w * 32;
  fiber &f = s->fibers[(size_t)t];
  warp_state &ws = s->warps[w];
  if (!(mask >> lane & 1u))
    thread_fails("thread %d shuffles with mask 0x%08x, which does not include its own lane %d", t, mask, lane);
  if (width < 1 || width > 32 || (width & (width - 1))) thread_fails("shuffle width %d (a power of 2 up to 32)", width);
  if (ws.waiting && ws.mask != mask)
    thread_fails("thread %d shuffles with mask 0x%08x while lanes of its warp wait at one with mask 0x%08x", t, mask,
                 ws.mask);
  if (!ws.waiting) {  // the first lane here: every lane of the mask must exist and be live
    for (int l = 0; l < 32; l++) {
      if (!(mask >> l & 1u)) continue;
      if (l0 + l >= s->nthreads)
        thread_fails("warp %d: shuffle with mask 0x%08x names lane %d, which this block of %d threads does not have",
                     w, mask, l, s->nthreads);
      if (s->fibers[(size_t)(l0 + l)].state == F_DONE)
        thread_fails("warp %d: shuffle with mask 0x%08x while lane %d has exited", w, mask, l);
    }
    ws.lanes = __builtin_popcount(mask);
  }
  int buf = (int)(f.shfl_count++ & 1u);
  s->xchg[w][buf][lane] = v;
  ws.mask = mask;
  f.state = F_WARP;
  if (++ws.waiting == ws.lanes) {
    ws.waiting = 0;
    for (int l = 0; l < 32; l++)
      if (mask >> l & 1u) make_ready(*s, l0 + l);
  }
  fiber_yield();
  int seg = lane & ~(width - 1), src = lane;
  switch (kind) {
    case SHFL_IDX: src = seg + (arg & (width - 1)); break;
    case SHFL_UP: src = lane - arg >= seg ? lane - arg : lane; break;
    case SHFL_DOWN: src = lane + arg < seg + width ? lane + arg : lane; break;
    case SHFL_XOR: src = (lane ^ arg) < seg + width && (lane ^ arg) >= seg ? lane ^ arg : lane; break;
  }
  if (!(mask >> src & 1u)) thread_fails("thread %d reads lane %d, outside the shuffle's mask 0x%08x", t, src, mask);
  return s->xchg[w][buf][src];
}

int cmds_emu::launch_begin(const char *name, const char *file, int line, const launch_cfg &c) {
  t_site = launch_site{name, file, line};
  g_launches++;
  if (g_sticky) return 1;
  const dim3 &g = c.grid, &b = c.block;
  uint64_t threads = (uint64_t)b.x * b.y * b.z;
  const char *why = nullptr;
  if (!g.x || !g.y || !g.z)
    why = "a grid dimension is 0";
  else if (g.x > 2147483647u || g.y > 65535u || g.z > 65535u)
    why = "grid dimensions over (2^31 - 1, 65535, 65535)";
  else if (!threads || threads > 1024 || b.z > 64)
    why = "block of 0 or over 1024 threads (or z over 64)";
  else if (c.smem)
    why = "dynamic shared memory (extern __shared__) is not emulated";
  if (why) {
    report("launch of %s (%s:%d) with grid (%u, %u, %u), block (%u, %u, %u), %zu bytes shared: %s", name, file,
           line, g.x, g.y, g.z, b.x, b.y, b.z, c.smem, why);
    set_error(cudaErrorInvalidConfiguration);
    return 1;
  }
  gridDim = g;
  blockDim = b;
  return 0;
}

void cmds_emu::check_pointer_arg(int i, const void *p) {
  if (!p || g_sticky) return;
  if (!is_device(p)) {
    report("kernel %s (%s:%d): argument %d (%p) is not device memory", t_site.name, t_site.file, t_site.line, i, p);
    g_sticky = cudaErrorInvalidDevicePointer;  // a fault on the GPU: sticky
    set_error(cudaErrorInvalidDevicePointer);
  }
}

void cmds_emu::launch_run(void (*body)(void *), void *ctx) {
  if (g_sticky) return;
  if (!t_pool) t_pool = new block_sched;
  block_sched &s = *t_pool;
  s.nthreads = (int)(blockDim.x * blockDim.y * blockDim.z);
  if (s.fibers.size() < (size_t)s.nthreads) s.fibers.resize((size_t)s.nthreads);
  for (unsigned t = 0, bx = blockDim.x, by = blockDim.y; t < (unsigned)s.nthreads; t++)
    s.fibers[t].tid = uint3{t % bx, t / bx % by, t / (bx * by)};
  s.body = body;
  s.ctx = ctx;
  s.failed = false;
  block_sched *outer = t_sched;
  t_sched = &s;
  uint64_t base = mix(seed() * 0x9e3779b97f4a7c15ull + g_launches);
  uint64_t resumes0 = g_resumes;
  static int want_stats = -1;
  if (want_stats < 0) {
    const char *e = getenv("CMDS_CUDA_EMU_STATS");
    want_stats = e && *e && strcmp(e, "0");
    if (want_stats) g_stats = new std::map<std::pair<const char *, int>, site_stats>, atexit(print_stats);
  }
  for (unsigned z = 0; z < gridDim.z; z++)
    for (unsigned y = 0; y < gridDim.y; y++)
      for (unsigned x = 0; x < gridDim.x; x++) {
        blockIdx = uint3{x, y, z};
        if (!run_block(s, mix(base + ((uint64_t)z << 48) + ((uint64_t)y << 32) + x))) {
          t_sched = outer;
          return;
        }
      }
  t_sched = outer;
  if (g_stats) {
    site_stats &st = (*g_stats)[{t_site.name, t_site.line}];
    st.launches++;
    st.threads += (uint64_t)gridDim.x * gridDim.y * gridDim.z * (uint64_t)s.nthreads;
    st.resumes += g_resumes - resumes0;
  }
}

// ---- runtime API -------------------------------------------------------------------------------
#define STICKY()                  \
  do {                            \
    if (g_sticky) return g_sticky; \
  } while (0)

extern "C" {

int cmds_emu_is_device(const void *p) { return is_device(p); }

cudaError_t cudaGetDeviceCount(int *n) {
  *n = 1;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int d) {
  if (d != 0) {
    set_error(cudaErrorInvalidDevice);
    return cudaErrorInvalidDevice;
  }
  g_device = d;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int *d) {
  *d = g_device;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d) {
  if (d != 0) return cudaErrorInvalidDevice;
  memset(p, 0, sizeof *p);
  snprintf(p->name, sizeof p->name, "cuda-emu (CPU emulation)");
  p->totalGlobalMem = (size_t)16 << 30;
  p->sharedMemPerBlock = 48 * 1024;
  p->warpSize = 32;
  p->maxThreadsPerBlock = 1024;
  p->multiProcessorCount = 1;
  p->major = 9;
  return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int *v) {
  *v = 0;
  return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t bytes) {
  STICKY();
  size_t padded = (bytes + ALIGN - 1) / ALIGN * ALIGN;
  if (!padded) padded = ALIGN;
  void *m = nullptr;
  if (posix_memalign(&m, ALIGN, padded)) {
    *p = nullptr;
    set_error(cudaErrorMemoryAllocation);
    return cudaErrorMemoryAllocation;
  }
  memset(m, 0xff, bytes);
  memset((char *)m + bytes, CANARY, padded - bytes);
  {
    std::lock_guard<std::mutex> g(g_mem_lock);
    g_blocks[(uintptr_t)m] = block_info{bytes, padded};
  }
  *p = m;
  return cudaSuccess;
}

cudaError_t cudaFree(void *p) {
  if (!p) return cudaSuccess;
  std::lock_guard<std::mutex> g(g_mem_lock);
  auto it = g_blocks.find((uintptr_t)p);
  if (it == g_blocks.end()) {
    report("cudaFree(%p): not the start of a cudaMalloc block", p);
    set_error(cudaErrorInvalidDevicePointer);
    return cudaErrorInvalidDevicePointer;
  }
  const unsigned char *c = (const unsigned char *)p;
  for (size_t i = it->second.bytes; i < it->second.padded; i++)
    if (c[i] != CANARY) {
      report("cudaFree(%p): the %zu-byte block was written past its end (byte %zu)", p, it->second.bytes, i);
      g_sticky = cudaErrorLaunchFailure;
      break;
    }
  g_blocks.erase(it);
  free(p);
  return g_sticky;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind) {
  STICKY();
  if (!bytes) return cudaSuccess;
  bool dd = is_device(dst), sd = is_device(src), ok = true;
  switch (kind) {
    case cudaMemcpyHostToDevice: ok = !sd && check_range("cudaMemcpy destination", dst, bytes); break;
    case cudaMemcpyDeviceToHost: ok = !dd && check_range("cudaMemcpy source", src, bytes); break;
    case cudaMemcpyDeviceToDevice:
      ok = check_range("cudaMemcpy destination", dst, bytes) && check_range("cudaMemcpy source", src, bytes);
      break;
    case cudaMemcpyDefault:
      ok = (!dd || check_range("cudaMemcpy destination", dst, bytes)) &&
           (!sd || check_range("cudaMemcpy source", src, bytes));
      break;
    default: ok = false;
  }
  if (!ok) {
    report("cudaMemcpy of %zu bytes from %p (%s) to %p (%s), kind %d: invalid", bytes, src, sd ? "device" : "host",
           dst, dd ? "device" : "host", (int)kind);
    set_error(cudaErrorInvalidValue);
    return cudaErrorInvalidValue;
  }
  memmove(dst, src, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind, cudaStream_t s) {
  (void)s;
  return cudaMemcpy(dst, src, bytes, kind);
}

cudaError_t cudaMemset(void *p, int value, size_t bytes) {
  STICKY();
  if (!bytes) return cudaSuccess;
  if (!check_range("cudaMemset", p, bytes)) {
    set_error(cudaErrorInvalidValue);
    return cudaErrorInvalidValue;
  }
  memset(p, value, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t s) {
  (void)s;
  return cudaMemset(p, value, bytes);
}

cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  (void)s;
  return g_sticky;
}

cudaError_t cudaDeviceSynchronize(void) { return g_sticky; }

cudaError_t cudaGetLastError(void) {
  cudaError_t e = g_sticky ? g_sticky : g_last;
  g_last = cudaSuccess;
  return e;
}

const char *cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
  }
  return "unknown error";
}

cudaError_t cmds_emu_func_set_attribute(const void *fn, enum cudaFuncAttribute a, int value) {
  (void)fn;
  (void)a;
  (void)value;
  return cudaSuccess;
}

}  // extern "C"

// Used by emu_blas.cpp.
bool cmds_emu_check_range(const char *what, const void *p, size_t n) { return check_range(what, p, n); }
cudaError_t cmds_emu_sticky(void) { return g_sticky; }
