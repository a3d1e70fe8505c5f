// emu.cpp: the CUDA emulation's runtime (tests/cuda_emu/include/cuda_runtime.h) and the block
// scheduler that runs kernels (cuda_emu_device.h).
//
// Memory: cudaMalloc blocks are host memory, 256-byte aligned, filled with 0xff bytes (NaN as
// floats, as garbage would read) and followed by a canary up to the next 256 bytes, checked on
// cudaFree; every copy, memset, cuBLAS matrix and kernel pointer argument must lie in one block.
//
// Kernels: each block's threads are fibers (an x86-64 register switch; ucontext elsewhere),
// given a stack from a pool when they first run and handing it back when they return, so a
// kernel without barriers runs on one stack. The scheduler resumes a ready thread until it
// returns or waits, picked as GPU warps run: the warps of a block in a priority order, a random
// lane of the first warp that has one ready; the order is drawn again at random points, on
// average every 2^e picks with e drawn per block from 2..14, so some blocks run their warps
// nearly in step and others let one warp run far ahead of the rest (which shows a missing
// barrier before a shared buffer is refilled). Everything is drawn from CMDS_CUDA_EMU_SEED and
// the launch count: a missing __syncthreads shows as a result that changes with the seed. A
// thread waits at a warp shuffle, released when
// every lane of the mask has come; at __syncthreads, released when every live thread has. No
// ready thread while some live: the deadlock is reported. CMDS_CUDA_EMU_ABORT=1 aborts at the
// first error (for a debugger). ldmatrix and mma.sync are warp collectives like a full-mask
// shuffle: the last lane to arrive computes every lane's result. A cp.async copy lands when
// issued or waits in its thread's queue until its cp_async_wait, drawn per copy.
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
#include "nn_half_bits.h"

// The fiber switch: our own register switch on x86-64, ucontext elsewhere (aarch64 nodes such as
// GH200) or when CMDS_CUDA_EMU_UCONTEXT is defined (cuda_emu.self_ucontext runs that path here).
#if defined(__x86_64__) && !defined(CMDS_CUDA_EMU_UCONTEXT)
#define CMDS_EMU_ASM_SWITCH 1
#else
#define CMDS_EMU_ASM_SWITCH 0
#endif

#if !CMDS_EMU_ASM_SWITCH
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

// A cp.async copy not landed yet: 16 bytes taken from global memory when issued (kernels do not
// write what they read asynchronously), written to shared memory by cp_async_wait.
struct async_copy {
  unsigned char *dst;
  unsigned char bytes[16];
  unsigned group;  // the commit group it belongs to
};

struct fiber {
  void *sp = nullptr;  // saved stack pointer (x86-64)
#if !CMDS_EMU_ASM_SWITCH
  ucontext_t uc;
#endif
  char *stack = nullptr;  // from the pool while the thread has started and not ended
  fstate state = F_READY;
  unsigned shfl_count = 0;  // shuffles done: selects the exchange buffer
  uint3 tid{0, 0, 0};       // its threadIdx
  std::vector<async_copy> copies;  // cp.async not landed yet
  unsigned committed = 0;          // cp.async groups committed
};

// The warp-synchronous instructions a lane can wait at; every lane of a warp must wait at the same.
enum warp_op { W_SHFL, W_LDSM, W_LDSM_T, W_MMA };
const char *const warp_op_name[] = {"a warp shuffle", "ldmatrix", "ldmatrix.trans", "mma.sync"};

struct warp_state {
  unsigned mask = 0;  // of the shuffle some lanes wait at (full for ldmatrix and mma)
  int waiting = 0, lanes = 0;
  warp_op op = W_SHFL;
};

const int COLL_BYTES = 64;  // a lane's operands or results of one warp collective
typedef unsigned char coll_buf[32][COLL_BYTES];

struct block_sched {
  std::vector<fiber> fibers;
  std::vector<int> ready[32];  // per warp, threads that can run: not started, or released
  int order[32];               // warps by priority
  int nwarps = 0;
  std::vector<char *> stacks; // free stacks (a thread takes one when it starts)
  void *sched_sp = nullptr;
#if !CMDS_EMU_ASM_SWITCH
  ucontext_t sched_uc;
#endif
  int cur = -1, nthreads = 0, live = 0, at_barrier = 0;
  warp_state warps[32];
  uint64_t xchg[32][2][32];  // per warp, two alternating buffers, per lane
  coll_buf coll_in[32], coll_out[32];  // per warp: ldmatrix / mma operands and results, per lane
  uint64_t rng = 0;
  void (*body)(void *) = nullptr;
  void *ctx = nullptr;
  bool failed = false;
};
thread_local block_sched *t_sched = nullptr;
uint64_t g_resumes = 0;

#if CMDS_EMU_ASM_SWITCH
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
#if CMDS_EMU_ASM_SWITCH
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
  s.ready[t / 32].push_back(t);
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
    thread_fails("thread %d exits while its warp waits for it at %s (mask 0x%08x)", t, warp_op_name[s->warps[w].op],
                 s->warps[w].mask);
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
#if CMDS_EMU_ASM_SWITCH
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
#if CMDS_EMU_ASM_SWITCH
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

// ---- dynamic shared memory -------------------------------------------------------------------
const size_t SMEM_DEFAULT = 48 * 1024;  // a launch may ask for this much without an attribute
const size_t SMEM_OPTIN = 166912;       // the most an sm_80 block (A100), the smaller target, can have
thread_local unsigned char *t_dsmem = nullptr;  // this OS thread's dynamic shared memory
thread_local size_t t_dsmem_bytes = 0, t_dsmem_cap = 0;
std::map<std::string, int> g_max_dsmem;  // kernel text, spaces removed -> MaxDynamicSharedMemorySize
std::mutex g_attr_lock;

std::string kernel_key(const char *text) {
  std::string k;
  for (const char *c = text; *c; c++)
    if (*c != ' ' && *c != '\t' && *c != '\n') k += *c;
  return k;
}

void fill_dynamic_smem() {
  if (t_dsmem_bytes) memset(t_dsmem, 0xff, t_dsmem_bytes);
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
  return s == F_BAR ? "__syncthreads" : s == F_WARP ? "a warp-synchronous instruction" : s == F_DONE ? "exit" : "running";
}

// A new priority order of the block's warps.
void draw_warp_order(block_sched &s) {
  for (int w = 0; w < s.nwarps; w++) s.order[w] = w;
  for (int w = s.nwarps - 1; w > 0; w--) {
    s.rng = mix(s.rng);
    int j = (int)(s.rng % (uint64_t)(w + 1));
    std::swap(s.order[w], s.order[j]);
  }
}

// Runs one block to the end, a ready thread at a time (the warp order, the top of this file).
// False when it cannot finish (the error is reported).
bool run_block(block_sched &s, uint64_t order_seed) {
  int n = s.nthreads;
  s.nwarps = (n + 31) / 32;
  for (auto &r : s.ready) r.clear();
  for (int t = 0; t < n; t++) {
    fiber &f = s.fibers[(size_t)t];
    if (f.stack) s.stacks.push_back(f.stack);  // left by a block that failed
    f.stack = nullptr;
    f.shfl_count = 0;
    f.copies.clear();
    f.committed = 0;
    make_ready(s, t);
  }
  fill_dynamic_smem();
  s.live = n;
  s.at_barrier = 0;
  for (auto &w : s.warps) w = warp_state{};
  s.rng = order_seed;
  draw_warp_order(s);
  s.rng = mix(s.rng);
  const uint64_t change_mask = ((uint64_t)1 << (2 + s.rng % 13)) - 1;  // a new order every 2^(2..14) picks
  for (;;) {
    s.rng = mix(s.rng);
    if (!(s.rng >> 40 & change_mask)) draw_warp_order(s);
    std::vector<int> *r = nullptr;
    for (int k = 0; k < s.nwarps && !r; k++)
      if (!s.ready[s.order[k]].empty()) r = &s.ready[s.order[k]];
    if (!r) break;
    size_t i = (size_t)(((unsigned __int128)s.rng * r->size()) >> 64);  // uniform in [0, size)
    int t = (*r)[i];
    (*r)[i] = r->back();
    r->pop_back();
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
    kernel_error("deadlock: thread %d waits at %s (mask 0x%08x) that the rest of its warp does not reach", a,
                 warp_op_name[s.warps[a / 32].op], s.warps[a / 32].mask);
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
  if (ws.waiting && ws.op != W_SHFL)
    thread_fails("thread %d shuffles while lanes of its warp wait at %s", t, warp_op_name[ws.op]);
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
  ws.op = W_SHFL;
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

// ---- sm_80 warp-level matrix instructions and asynchronous copies ----------------------------
namespace {

// A warp collective (.sync.aligned: every lane of the warp, the same instruction): the lane's
// operands go in coll_in; the last lane to arrive runs `compute` over all 32 lanes' operands
// before any lane goes on (so no lane's later stores can reach what another lane reads), then
// each lane takes its result from coll_out. The next collective cannot overwrite coll_out before
// every lane has taken its result: it completes only when all 32 lanes reach it.
void warp_collective(warp_op op, const void *in, size_t nin, void *out, size_t nout,
                     void (*compute)(const coll_buf &in, coll_buf &out)) {
  block_sched *s = current_thread(warp_op_name[op]);
  int t = s->cur, w = t / 32, lane = t % 32, l0 = w * 32;
  warp_state &ws = s->warps[w];
  if (ws.waiting && ws.op != op)
    thread_fails("thread %d reaches %s while lanes of its warp wait at %s", t, warp_op_name[op], warp_op_name[ws.op]);
  if (!ws.waiting) {
    for (int l = 0; l < 32; l++) {
      if (l0 + l >= s->nthreads)
        thread_fails("warp %d: %s needs all 32 lanes; this block of %d threads has no lane %d", w, warp_op_name[op],
                     s->nthreads, l);
      if (s->fibers[(size_t)(l0 + l)].state == F_DONE)
        thread_fails("warp %d: %s while lane %d has exited", w, warp_op_name[op], l);
    }
    ws.lanes = 32;
    ws.mask = 0xffffffffu;
    ws.op = op;
  }
  memcpy(s->coll_in[w][lane], in, nin);
  s->fibers[(size_t)t].state = F_WARP;
  if (++ws.waiting == 32) {
    compute(s->coll_in[w], s->coll_out[w]);
    ws.waiting = 0;
    for (int l = 0; l < 32; l++) make_ready(*s, l0 + l);
  }
  fiber_yield();
  memcpy(out, s->coll_out[w][lane], nout);
}

bool in_dynamic_smem(const void *p, size_t n) {
  return t_dsmem_bytes && (const unsigned char *)p >= t_dsmem && (const unsigned char *)p + n <= t_dsmem + t_dsmem_bytes;
}

// ldmatrix .m8n8.x4 .b16: lanes 8m .. 8m + 7 give the 16-byte rows 0..7 of matrix m; lane l gets,
// in register m, elements (l / 4, 2 (l % 4)) and (l / 4, 2 (l % 4) + 1) of matrix m, or with
// .trans elements (2 (l % 4), l / 4) and (2 (l % 4) + 1, l / 4); the first in the low half.
template <bool TRANS>
void ldsm_compute(const coll_buf &in, coll_buf &out) {
  const uint16_t *row[32];
  for (int l = 0; l < 32; l++) memcpy(&row[l], in[l], sizeof row[l]);
  for (int l = 0; l < 32; l++) {
    uint32_t r[4];
    for (int m = 0; m < 4; m++) {
      uint16_t e0, e1;
      if (TRANS) {
        e0 = row[8 * m + 2 * (l % 4)][l / 4];
        e1 = row[8 * m + 2 * (l % 4) + 1][l / 4];
      } else {
        e0 = row[8 * m + l / 4][2 * (l % 4)];
        e1 = row[8 * m + l / 4][2 * (l % 4) + 1];
      }
      r[m] = (uint32_t)e0 | (uint32_t)e1 << 16;
    }
    memcpy(out[l], r, sizeof r);
  }
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, fragments as the PTX ISA lays them out,
// with g = lane / 4, q = lane % 4 (two bf16 per register, the lower column or k in the low half):
//   A (16 x 16): a0 (g, 2q..2q+1), a1 (g + 8, 2q..), a2 (g, 2q + 8..), a3 (g + 8, 2q + 8..)
//   B (16 x 8, k x n): b0 (k 2q..2q+1, n g), b1 (k 2q + 8.., n g)
//   C, D (16 x 8, f32): c0, c1 (g, 2q..2q+1), c2, c3 (g + 8, 2q..2q+1)
// The products of bf16 values are exact in f32; the sum of the 16 and C is taken in double and
// rounded once (a GPU's tensor cores round in their own order: tests bound the difference).
struct mma_in {
  uint32_t a[4], b[2];
  float c[4];
};
static_assert(sizeof(mma_in) <= COLL_BYTES && 4 * sizeof(uint32_t) <= COLL_BYTES, "a lane's collective operands");
float bf16_lo(uint32_t r) { return nn_bits_bf16_to_f32((uint16_t)(r & 0xffffu)); }
float bf16_hi(uint32_t r) { return nn_bits_bf16_to_f32((uint16_t)(r >> 16)); }

void mma_compute(const coll_buf &in, coll_buf &out) {
  float A[16][16], B[16][8], C[16][8];
  for (int l = 0; l < 32; l++) {
    mma_in x;
    memcpy(&x, in[l], sizeof x);
    int g = l / 4, q = l % 4;
    for (int h = 0; h < 4; h++) {  // a_h: rows g (+8 for h odd), columns 2q (+8 for h >= 2)
      int r = g + (h & 1) * 8, c = 2 * q + (h >> 1) * 8;
      A[r][c] = bf16_lo(x.a[h]);
      A[r][c + 1] = bf16_hi(x.a[h]);
    }
    for (int h = 0; h < 2; h++) {
      B[2 * q + 8 * h][g] = bf16_lo(x.b[h]);
      B[2 * q + 8 * h + 1][g] = bf16_hi(x.b[h]);
    }
    C[g][2 * q] = x.c[0];
    C[g][2 * q + 1] = x.c[1];
    C[g + 8][2 * q] = x.c[2];
    C[g + 8][2 * q + 1] = x.c[3];
  }
  for (int l = 0; l < 32; l++) {
    int g = l / 4, q = l % 4;
    float d[4];
    for (int e = 0; e < 4; e++) {
      int r = g + (e >> 1) * 8, c = 2 * q + (e & 1);
      double acc = C[r][c];
      for (int k = 0; k < 16; k++) acc += (double)A[r][k] * B[k][c];
      d[e] = (float)acc;
    }
    memcpy(out[l], d, sizeof d);
  }
}

}  // namespace

void *cmds_emu::dynamic_smem() {
  current_thread("extern __shared__");
  return t_dsmem;
}

void cmds_emu::cp_async16(void *dst, const void *src, bool valid) {
  block_sched *s = current_thread("cp.async");
  fiber &f = s->fibers[(size_t)s->cur];
  if ((uintptr_t)dst % 16 || (valid && (uintptr_t)src % 16))
    thread_fails("cp.async of 16 bytes from %p to %p: both must be 16-byte aligned", src, dst);
  if (!in_dynamic_smem(dst, 16))
    thread_fails("cp.async to %p: not inside the launch's %zu bytes of dynamic shared memory", dst, t_dsmem_bytes);
  async_copy c;
  c.dst = (unsigned char *)dst;
  c.group = f.committed;
  if (valid) {
    if (!check_range("cp.async source", src, 16)) thread_fails("cp.async from %p: not device memory", src);
    memcpy(c.bytes, src, 16);
  } else {
    memset(c.bytes, 0, 16);
  }
  // A copy lands at some time between its issue and its thread's wait: here, drawn per copy, at
  // once (a shared buffer refilled while other warps still read it shows) or at the wait (a
  // read before the wait sees the old bytes).
  s->rng = mix(s->rng);
  if (s->rng >> 63)
    memcpy(c.dst, c.bytes, 16);
  else
    f.copies.push_back(c);
}

void cmds_emu::cp_async_commit() {
  block_sched *s = current_thread("cp.async.commit_group");
  s->fibers[(size_t)s->cur].committed++;
}

void cmds_emu::cp_async_wait(int n) {
  block_sched *s = current_thread("cp.async.wait_group");
  fiber &f = s->fibers[(size_t)s->cur];
  size_t kept = 0;
  for (async_copy &c : f.copies) {  // groups older than the n most recent committed land
    if (c.group + (unsigned)n < f.committed)
      memcpy(c.dst, c.bytes, 16);
    else
      f.copies[kept++] = c;
  }
  f.copies.resize(kept);
}

void cmds_emu::ldmatrix_x4(uint32_t (&r)[4], const void *row, bool trans) {
  if ((uintptr_t)row % 16) thread_fails("ldmatrix: row address %p is not 16-byte aligned", row);
  if (t_dsmem_bytes && !in_dynamic_smem(row, 16))
    thread_fails("ldmatrix: row %p is not inside the launch's %zu bytes of dynamic shared memory", row, t_dsmem_bytes);
  if (trans)
    warp_collective(W_LDSM_T, &row, sizeof row, r, sizeof r, ldsm_compute<true>);
  else
    warp_collective(W_LDSM, &row, sizeof row, r, sizeof r, ldsm_compute<false>);
}

void cmds_emu::mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  mma_in x;
  memcpy(x.a, a, sizeof x.a);
  x.b[0] = b0;
  x.b[1] = b1;
  memcpy(x.c, d, sizeof x.c);
  warp_collective(W_MMA, &x, sizeof x, d, sizeof d, mma_compute);
}

int cmds_emu::launch_begin(const char *name, const char *file, int line, const launch_cfg &c) {
  t_site = launch_site{name, file, line};
  g_launches++;
  if (g_sticky) return 1;
  const dim3 &g = c.grid, &b = c.block;
  uint64_t threads = (uint64_t)b.x * b.y * b.z;
  const char *why = nullptr;
  cudaError_t code = cudaErrorInvalidConfiguration;
  int optin = 0;
  if (c.smem > SMEM_DEFAULT) {
    std::lock_guard<std::mutex> lk(g_attr_lock);
    auto it = g_max_dsmem.find(kernel_key(name));
    if (it != g_max_dsmem.end()) optin = it->second;
  }
  if (!g.x || !g.y || !g.z)
    why = "a grid dimension is 0";
  else if (g.x > 2147483647u || g.y > 65535u || g.z > 65535u)
    why = "grid dimensions over (2^31 - 1, 65535, 65535)";
  else if (!threads || threads > 1024 || b.z > 64)
    why = "block of 0 or over 1024 threads (or z over 64)";
  else if (c.smem > SMEM_OPTIN)
    why = "dynamic shared memory over 166912 bytes, the most an sm_80 (A100) block can have";
  else if (c.smem > SMEM_DEFAULT && (size_t)optin < c.smem)
    why = "over 48 KiB of dynamic shared memory, and cudaFuncSetAttribute(MaxDynamicSharedMemorySize) was not "
          "given at least that for this kernel",
    code = cudaErrorInvalidValue;
  if (why) {
    report("launch of %s (%s:%d) with grid (%u, %u, %u), block (%u, %u, %u), %zu bytes shared: %s", name, file,
           line, g.x, g.y, g.z, b.x, b.y, b.z, c.smem, why);
    set_error(code);
    return 1;
  }
  if (c.smem > t_dsmem_cap) {
    free(t_dsmem);
    t_dsmem = (unsigned char *)aligned_alloc(128, (c.smem + 127) / 128 * 128);
    if (!t_dsmem) {
      perror("cuda-emu: dynamic shared memory");
      abort();
    }
    t_dsmem_cap = c.smem;
  }
  t_dsmem_bytes = c.smem;
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

cudaError_t cmds_emu_func_set_attribute(const char *kernel, enum cudaFuncAttribute a, int value) {
  STICKY();
  if (a != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || (size_t)value > SMEM_OPTIN) {
    report("cudaFuncSetAttribute(%s, %d, %d): the emulation knows MaxDynamicSharedMemorySize (%d), up to %zu bytes",
           kernel, (int)a, value, (int)cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM_OPTIN);
    set_error(cudaErrorInvalidValue);
    return cudaErrorInvalidValue;
  }
  std::lock_guard<std::mutex> lk(g_attr_lock);
  g_max_dsmem[kernel_key(kernel)] = value;
  return cudaSuccess;
}

}  // extern "C"

// Used by emu_blas.cpp.
bool cmds_emu_check_range(const char *what, const void *p, size_t n) { return check_range(what, p, n); }
cudaError_t cmds_emu_sticky(void) { return g_sticky; }
