/* Heap allocation counter for canaryd's benchmark (bench/run.sh builds it with
 * `cc -O2 -shared -fPIC -o alloc_count.so alloc_count.c -ldl`; never commit the
 * .so). Preloaded into one process:
 *
 *   LD_PRELOAD=/tmp/.../alloc_count.so ALLOC_COUNT_FILE=/tmp/.../counts canaryd ...
 *
 * it counts every call of malloc, calloc, realloc, the aligned family
 * (posix_memalign, aligned_alloc, memalign, valloc, pvalloc), operator new (all
 * eight forms), free, and the bytes asked for, and forwards each call to the
 * next definition (glibc's, found with dlsym(RTLD_NEXT)).
 *
 * The counters live in ALLOC_COUNT_FILE itself, mapped MAP_SHARED: the harness
 * reads them whenever it likes (before and after a load run; `od -An -t u8`),
 * no signal and no exit hook needed, and a forked child (nginx's workers) adds
 * to the same file. Layout: 8 little-endian uint64 — magic, malloc, calloc,
 * realloc, aligned, operator new, free, bytes requested. Without the variable
 * the counts stay in memory (still read by nothing: the shim is then a no-op
 * apart from its cost).
 *
 * Robustness: the counters are lock-free atomics (relaxed: only totals
 * matter), nothing here allocates, and the calls made while dlsym resolves the
 * real functions (dlsym may itself call calloc) are served from a static
 * bump arena that free() recognises and ignores. operator new calls the real
 * malloc directly, so one `new` counts once (as new), not also as a malloc; on
 * failure it hands over to the real operator new, which runs the new_handler
 * and throws std::bad_alloc as the program expects. glibc routes its own
 * internal allocations (strdup, fopen, ...) through these symbols too.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum { K_MAGIC, K_MALLOC, K_CALLOC, K_REALLOC, K_ALIGNED, K_NEW, K_FREE, K_BYTES, K_COUNT };
#define MAGIC 0x31544e434f4c4c41ull /* "ALLOCNT1" */

static uint64_t boot_counts[K_COUNT] = {MAGIC};
static uint64_t* counts = boot_counts;

static inline void bump(int k, size_t bytes) {
  uint64_t* c = __atomic_load_n(&counts, __ATOMIC_RELAXED);
  __atomic_fetch_add(&c[k], 1, __ATOMIC_RELAXED);
  if (bytes) __atomic_fetch_add(&c[K_BYTES], bytes, __ATOMIC_RELAXED);
}

/* ---- the real functions ------------------------------------------------- */
static void* (*real_malloc)(size_t);
static void* (*real_calloc)(size_t, size_t);
static void* (*real_realloc)(void*, size_t);
static void (*real_free)(void*);
static int (*real_posix_memalign)(void**, size_t, size_t);
static void* (*real_aligned_alloc)(size_t, size_t);
static void* (*real_memalign)(size_t, size_t);
static void* (*real_valloc)(size_t);
static void* (*real_pvalloc)(size_t);
static int resolving;

static void resolve(void) {
  if (__atomic_load_n(&real_free, __ATOMIC_ACQUIRE) || resolving) return;
  /* Only ever reached before the program starts threads (the first
   * allocation happens in ld.so's or libstdc++'s start-up), so a plain flag
   * is enough to send dlsym's own allocations to the arena. */
  resolving = 1;
  real_malloc = (void* (*)(size_t))dlsym(RTLD_NEXT, "malloc");
  real_calloc = (void* (*)(size_t, size_t))dlsym(RTLD_NEXT, "calloc");
  real_realloc = (void* (*)(void*, size_t))dlsym(RTLD_NEXT, "realloc");
  real_posix_memalign = (int (*)(void**, size_t, size_t))dlsym(RTLD_NEXT, "posix_memalign");
  real_aligned_alloc = (void* (*)(size_t, size_t))dlsym(RTLD_NEXT, "aligned_alloc");
  real_memalign = (void* (*)(size_t, size_t))dlsym(RTLD_NEXT, "memalign");
  real_valloc = (void* (*)(size_t))dlsym(RTLD_NEXT, "valloc");
  real_pvalloc = (void* (*)(size_t))dlsym(RTLD_NEXT, "pvalloc");
  void (*f)(void*) = (void (*)(void*))dlsym(RTLD_NEXT, "free");
  resolving = 0;
  if (!real_malloc || !real_calloc || !real_realloc || !f) {
    static const char msg[] = "alloc_count: dlsym(RTLD_NEXT) did not find malloc/calloc/realloc/free\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(127);
  }
  __atomic_store_n(&real_free, f, __ATOMIC_RELEASE);
}

/* ---- the arena for allocations made while resolving ---------------------- */
static _Alignas(16) unsigned char arena[64 * 1024];
static size_t arena_used;

static void* arena_alloc(size_t n) {
  size_t need = ((n + 15) & ~(size_t)15) + 16; /* 16-byte header holds the size */
  size_t at = __atomic_fetch_add(&arena_used, need, __ATOMIC_RELAXED);
  if (at + need > sizeof arena) return NULL;
  memcpy(arena + at, &n, sizeof n);
  return arena + at + 16;
}
static int in_arena(const void* p) {
  return (const unsigned char*)p >= arena && (const unsigned char*)p < arena + sizeof arena;
}
static size_t arena_size(const void* p) {
  size_t n;
  memcpy(&n, (const unsigned char*)p - 16, sizeof n);
  return n;
}

/* ---- the C allocator ------------------------------------------------------ */
void* malloc(size_t n) {
  resolve();
  if (!real_malloc) return arena_alloc(n);
  bump(K_MALLOC, n);
  return real_malloc(n);
}

void* calloc(size_t k, size_t n) {
  resolve();
  if (!real_calloc) {
    if (n && k > (size_t)-1 / n) return NULL;
    return arena_alloc(k * n); /* static storage: already zero */
  }
  bump(K_CALLOC, k * n);
  return real_calloc(k, n);
}

void* realloc(void* p, size_t n) {
  resolve();
  if (p && in_arena(p)) { /* move out of the arena */
    void* q = malloc(n);
    if (q) {
      size_t old = arena_size(p);
      memcpy(q, p, old < n ? old : n);
    }
    return q;
  }
  if (!real_realloc) return arena_alloc(n);
  bump(K_REALLOC, n);
  return real_realloc(p, n);
}

void free(void* p) {
  if (!p || in_arena(p)) return;
  resolve();
  bump(K_FREE, 0);
  real_free(p);
}

int posix_memalign(void** out, size_t align, size_t n) {
  resolve();
  bump(K_ALIGNED, n);
  return real_posix_memalign ? real_posix_memalign(out, align, n) : ENOMEM;
}

void* aligned_alloc(size_t align, size_t n) {
  resolve();
  bump(K_ALIGNED, n);
  return real_aligned_alloc ? real_aligned_alloc(align, n) : NULL;
}

void* memalign(size_t align, size_t n) {
  resolve();
  bump(K_ALIGNED, n);
  return real_memalign ? real_memalign(align, n) : NULL;
}

void* valloc(size_t n) {
  resolve();
  bump(K_ALIGNED, n);
  return real_valloc ? real_valloc(n) : NULL;
}

void* pvalloc(size_t n) {
  resolve();
  bump(K_ALIGNED, n);
  return real_pvalloc ? real_pvalloc(n) : NULL;
}

/* ---- operator new (Itanium C++ ABI names; the deletes all end in free) ---- */
static void* new_plain(size_t n, const char* real_name) {
  resolve();
  bump(K_NEW, n);
  void* p = real_malloc(n ? n : 1);
  if (p || !real_name) return p; /* a nothrow form returns NULL */
  /* Out of memory: the real operator new runs the new_handler and throws. */
  void* (*real)(size_t) = (void* (*)(size_t))dlsym(RTLD_NEXT, real_name);
  if (!real) abort();
  return real(n);
}

static void* new_aligned(size_t n, size_t align, const char* real_name) {
  resolve();
  bump(K_NEW, n);
  void* p = NULL;
  if (align < sizeof(void*)) align = sizeof(void*);
  if (real_posix_memalign(&p, align, n ? n : 1) != 0) p = NULL;
  if (p || !real_name) return p;
  void* (*real)(size_t, size_t) = (void* (*)(size_t, size_t))dlsym(RTLD_NEXT, real_name);
  if (!real) abort();
  return real(n, align);
}

void* _Znwm(size_t n) { return new_plain(n, "_Znwm"); }
void* _Znam(size_t n) { return new_plain(n, "_Znam"); }
void* _ZnwmRKSt9nothrow_t(size_t n, const void* tag) { (void)tag; return new_plain(n, NULL); }
void* _ZnamRKSt9nothrow_t(size_t n, const void* tag) { (void)tag; return new_plain(n, NULL); }
void* _ZnwmSt11align_val_t(size_t n, size_t a) { return new_aligned(n, a, "_ZnwmSt11align_val_t"); }
void* _ZnamSt11align_val_t(size_t n, size_t a) { return new_aligned(n, a, "_ZnamSt11align_val_t"); }
void* _ZnwmSt11align_val_tRKSt9nothrow_t(size_t n, size_t a, const void* tag) {
  (void)tag;
  return new_aligned(n, a, NULL);
}
void* _ZnamSt11align_val_tRKSt9nothrow_t(size_t n, size_t a, const void* tag) {
  (void)tag;
  return new_aligned(n, a, NULL);
}

/* ---- the counter file ------------------------------------------------------ */
__attribute__((constructor)) static void alloc_count_init(void) {
  resolve();
  const char* path = getenv("ALLOC_COUNT_FILE");
  if (!path || !*path) return;
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return;
  void* m = MAP_FAILED;
  if (ftruncate(fd, 4096) == 0) m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (m == MAP_FAILED) return;
  /* Constructors run before the program's threads: nothing counts between
   * the copy and the switch. */
  memcpy(m, boot_counts, sizeof boot_counts);
  __atomic_store_n(&counts, (uint64_t*)m, __ATOMIC_RELEASE);
}
