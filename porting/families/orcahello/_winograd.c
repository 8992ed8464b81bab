/* Winograd F(2,3) / F(4,3) tile transforms on NHWC float32 memory (porting/winograd.py; issue 14).
 *
 * wino_input:  x [N, H, W, C]  -> V [n*n, T, C]   V = B^T d B per n x n input tile (zero padding 1)
 * wino_gemm:   V, U [n*n, K/32, C, 32] -> M [n*n, T, K]   M[p] = V[p] @ U[p] (AVX-512; else torch.bmm)
 * wino_output: M [n*n, T, K]   -> y [N, H, W, K]  y = A^T M A + bias (+ residual) (ReLU)
 *
 * T = N * ceil(H/m) * ceil(W/m) tiles in (n, ty, tx) order; n = m + 2. Position-major layouts: the GEMM
 * reads rows of C contiguous floats (tile-major, with a power-of-two row stride, measured 2-3x slower: cache-set
 * conflicts). Loops run over blocks of 16 channels so the compiler vectorizes them: one variant per ISA
 * (AVX-512, AVX2, baseline x86-64), the best the CPU has by default, any other the CPU has on request
 * (wino_set_isa), so a test exercises every variant on any machine instead of only the one it lands on (issue 19).
 * Every product and sum is rounded as written (-ffp-contract=off), so all variants give the same bits. Work is split over tiles with plain pthreads (no second OpenMP runtime beside
 * torch's). The matrices are those of porting.families.orcahello.winograd.matrices (tests/test_winograd.py checks the two agree).
 * No Python API: loaded with ctypes, so it does not depend on the torch or Python ABI.
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#define CB 16
#define MAXN 6

static const float AT2[2][4] = {{1, 1, 1, 0}, {0, 1, -1, 1}};
static const float BT2[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, -1, 0, 1}};
static const float AT4[4][6] = {{1, 1, 1, 1, 1, 0},
                                {0, 1, -1, 0.5f, -2, 0},
                                {0, 1, 1, 0.25f, 4, 0},
                                {0, 1, -1, 0.125f, -8, 1}};
static const float BT4[6][6] = {{2, -3, -4, 3, 2, 0},  {0, -2, 1, 5, 2, 0},  {0, -2, 5, -1, -2, 0},
                                {0, 2, 1, -2, -1, 0},  {0, 1, -2, -1, 2, 0}, {0, 2, -3, -4, 3, 2}};

int wino_abi(void) { return 2; }

#if defined(__GNUC__) && defined(__x86_64__)
#define X86 1
#endif

typedef struct {
    const float *x; float *v; const float *bias, *res; float *y;
    int64_t nb, h, w, c, m, relu;
} job_t;

/* DST[r][c] = sum_k MAT[r][k] SRC[k][c] over k = 0..NN-1 in order, for r < ROWS, c < NN (W channels each). */
#define LMUL(DST, MAT, SRC, ROWS, NN, W)                                                                \
    for (int r_ = 0; r_ < ROWS; r_++)                                                                   \
        for (int c_ = 0; c_ < NN; c_++) {                                                               \
            for (int q = 0; q < W; q++) DST[r_][c_][q] = MAT[r_][0] * SRC[0][c_][q];                    \
            for (int k_ = 1; k_ < NN; k_++)                                                             \
                for (int q = 0; q < W; q++) DST[r_][c_][q] = DST[r_][c_][q] + MAT[r_][k_] * SRC[k_][c_][q]; \
        }

/* ACC = sum_k ROW[k] MATROW[k] over k = 0..NN-1 in order (W channels). */
#define RDOT(ACC, ROW, MATROW, NN, W)                                                                   \
    do {                                                                                                \
        for (int q = 0; q < W; q++) ACC[q] = ROW[0][q] * MATROW[0];                                     \
        for (int k_ = 1; k_ < NN; k_++)                                                                 \
            for (int q = 0; q < W; q++) ACC[q] = ACC[q] + ROW[k_][q] * MATROW[k_];                      \
    } while (0)

/* One n x n tile, channels [c0, c0 + nc): V[p][t][c] = (B^T d B)[p]. */
#define INPUT_TILE(NN, BT)                                                                              \
    do {                                                                                                \
        float d[NN][NN][CB], tmp[NN][NN][CB];                                                           \
        for (int i = 0; i < NN; i++) {                                                                  \
            int64_t yy = y0 + i;                                                                        \
            for (int j = 0; j < NN; j++) {                                                              \
                int64_t xx = x0 + j;                                                                    \
                if (yy >= 0 && yy < J->h && xx >= 0 && xx < J->w) {                                     \
                    const float *src = J->x + ((b * J->h + yy) * J->w + xx) * J->c + c0;                \
                    for (int q = 0; q < nc; q++) d[i][j][q] = src[q];                                   \
                } else {                                                                                \
                    for (int q = 0; q < nc; q++) d[i][j][q] = 0.0f;                                     \
                }                                                                                       \
            }                                                                                           \
        }                                                                                               \
        LMUL(tmp, BT, d, NN, NN, nc)                                                                    \
        for (int i = 0; i < NN; i++)                                                                    \
            for (int l = 0; l < NN; l++) {                                                              \
                float acc[CB];                                                                          \
                RDOT(acc, tmp[i], BT[l], NN, nc);                                                       \
                float *dst = J->v + ((int64_t)(i * NN + l) * T + t) * J->c + c0;                        \
                for (int q = 0; q < nc; q++) dst[q] = acc[q];                                           \
            }                                                                                           \
    } while (0)

static inline __attribute__((always_inline)) void input_body(const void *ctx, int64_t t0, int64_t t1) {
    const job_t *J = (const job_t *)ctx;
    const int64_t m = J->m, th = (J->h + m - 1) / m, tw = (J->w + m - 1) / m, T = J->nb * th * tw;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t b = t / (th * tw), ty = (t / tw) % th, tx = t % tw;
        const int64_t y0 = ty * m - 1, x0 = tx * m - 1;
        for (int64_t c0 = 0; c0 < J->c; c0 += CB) {
            if (J->c - c0 >= CB) {
                const int nc = CB;
                if (m == 2) INPUT_TILE(4, BT2); else INPUT_TILE(6, BT4);
            } else {
                const int nc = (int)(J->c - c0);
                if (m == 2) INPUT_TILE(4, BT2); else INPUT_TILE(6, BT4);
            }
        }
    }
}

/* One tile's m x m outputs, channels [k0, k0 + nk). */
#define OUTPUT_TILE(NN, MM, AT)                                                                         \
    do {                                                                                                \
        float s[NN][NN][CB], tmp[MM][NN][CB];                                                           \
        for (int p = 0; p < NN * NN; p++) {                                                             \
            const float *src = J->x + ((int64_t)p * T + t) * J->c + k0;                                 \
            for (int q = 0; q < nk; q++) s[p / NN][p % NN][q] = src[q];                                 \
        }                                                                                               \
        LMUL(tmp, AT, s, MM, NN, nk)                                                                    \
        for (int a = 0; a < MM; a++) {                                                                  \
            int64_t yy = ty * MM + a;                                                                   \
            if (yy >= J->h) break;                                                                      \
            for (int e = 0; e < MM; e++) {                                                              \
                int64_t xx = tx * MM + e;                                                               \
                if (xx >= J->w) break;                                                                  \
                float acc[CB];                                                                          \
                RDOT(acc, tmp[a], AT[e], NN, nk);                                                       \
                if (J->bias)                                                                            \
                    for (int q = 0; q < nk; q++) acc[q] = acc[q] + J->bias[k0 + q];                     \
                const int64_t off = ((b * J->h + yy) * J->w + xx) * J->c + k0;                          \
                if (J->res)                                                                             \
                    for (int q = 0; q < nk; q++) acc[q] = acc[q] + J->res[off + q];                     \
                if (J->relu)                                                                            \
                    for (int q = 0; q < nk; q++) acc[q] = acc[q] > 0.0f ? acc[q] : 0.0f;                \
                for (int q = 0; q < nk; q++) J->y[off + q] = acc[q];                                    \
            }                                                                                           \
        }                                                                                               \
    } while (0)

static inline __attribute__((always_inline)) void output_body(const void *ctx, int64_t t0, int64_t t1) {
    const job_t *J = (const job_t *)ctx;
    const int64_t m = J->m, th = (J->h + m - 1) / m, tw = (J->w + m - 1) / m, T = J->nb * th * tw;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t b = t / (th * tw), ty = (t / tw) % th, tx = t % tw;
        for (int64_t k0 = 0; k0 < J->c; k0 += CB) {
            if (J->c - k0 >= CB) {
                const int nk = CB;
                if (m == 2) OUTPUT_TILE(4, 2, AT2); else OUTPUT_TILE(6, 4, AT4);
            } else {
                const int nk = (int)(J->c - k0);
                if (m == 2) OUTPUT_TILE(4, 2, AT2); else OUTPUT_TILE(6, 4, AT4);
            }
        }
    }
}

/* ---- the ISA variants: the same body compiled per target (GCC inlines a baseline body into a wider target) --- */
typedef void (*range_fn)(const void *ctx, int64_t i0, int64_t i1);

#define VARIANT(NAME, ATTR)                                                                             \
    ATTR static void input_##NAME(const void *c, int64_t a, int64_t b) { input_body(c, a, b); }         \
    ATTR static void output_##NAME(const void *c, int64_t a, int64_t b) { output_body(c, a, b); }

VARIANT(base, )
#ifdef X86
VARIANT(avx2, __attribute__((target("avx2"))))
VARIANT(avx512, __attribute__((target("avx512f"))))
#endif

/* ISA codes: 0 baseline, 1 AVX2, 2 AVX-512 (porting.families.orcahello.winograd.ISAS). -1: not chosen yet (the best there is). */
static int isa_now = -1;

int wino_isa_supported(int isa) {
    if (isa == 0) return 1;
#ifdef X86
    __builtin_cpu_init();
    if (isa == 1) return __builtin_cpu_supports("avx2");
    if (isa == 2) return __builtin_cpu_supports("avx512f");
#endif
    return 0;
}

static int isa_best(void) { return wino_isa_supported(2) ? 2 : wino_isa_supported(1) ? 1 : 0; }

/* The variant every later call runs; refused (returns 0, nothing changed) where the CPU lacks the ISA. */
int wino_set_isa(int isa) {
    if (isa < 0 || isa > 2 || !wino_isa_supported(isa)) return 0;
    isa_now = isa;
    return 1;
}

int wino_isa(void) { return isa_now < 0 ? isa_best() : isa_now; }

static range_fn pick(int output) {
#ifdef X86
    switch (wino_isa()) {
    case 2: return output ? output_avx512 : input_avx512;
    case 1: return output ? output_avx2 : input_avx2;
    }
#endif
    return output ? output_base : input_base;
}

/* ---- one fan-out for every kernel: items [0, n) split over plain pthreads, share 0 on the calling thread -------- */
typedef struct { range_fn fn; const void *ctx; int64_t i0, i1; } task_t;

static void *run_task(void *arg) {
    const task_t *k = (const task_t *)arg;
    k->fn(k->ctx, k->i0, k->i1);
    return NULL;
}

#define MAXTHREADS 64

static void parallel(range_fn fn, const void *ctx, int64_t n, int threads) {
    if (threads < 1) threads = 1;
    if (threads > MAXTHREADS) threads = MAXTHREADS;
    if (n < 2 * threads) threads = 1;
    task_t tasks[MAXTHREADS];
    pthread_t ids[MAXTHREADS];
    int started[MAXTHREADS];
    for (int i = 0; i < threads; i++) {
        tasks[i] = (task_t){fn, ctx, n * i / threads, n * (i + 1) / threads};
        started[i] = 0;
    }
    for (int i = 1; i < threads; i++)
        started[i] = pthread_create(&ids[i], NULL, run_task, &tasks[i]) == 0;
    run_task(&tasks[0]);
    for (int i = 1; i < threads; i++) {
        if (started[i]) pthread_join(ids[i], NULL);
        else run_task(&tasks[i]);  /* no thread: do its share here */
    }
}

/* ---- per-position GEMMs: M[p] = V[p] @ U[p], U packed as [n*n][K/32][C][32] (wino_pack_weight) ----------------
 * AVX-512 only (torch.bmm elsewhere): 8 rows x 32 columns of M in 16 registers, one pass over C. MKL's sgemm
 * reaches 110-180 GFLOP/s on these shapes on AMD Zen 4/5, against ~460 for oneDNN's direct convolution. */
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define HAVE_GEMM 1
#define PW 32
#define MR 8

__attribute__((target("avx512f"))) static void gemm_rows(const float *v, const float *up, float *out, int64_t rows,
                                                         int64_t c, int64_t ldv, int64_t ldo) {
    int64_t t = 0;
    for (; t + MR <= rows; t += MR) {
        __m512 a0 = _mm512_setzero_ps(), b0 = a0, c0 = a0, d0 = a0, e0 = a0, f0 = a0, g0 = a0, h0 = a0;
        __m512 a1 = a0, b1 = a0, c1 = a0, d1 = a0, e1 = a0, f1 = a0, g1 = a0, h1 = a0;
        const float *r = v + t * ldv;
        for (int64_t q = 0; q < c; q++) {
            const __m512 w0 = _mm512_loadu_ps(up + q * PW), w1 = _mm512_loadu_ps(up + q * PW + 16);
            __m512 x;
#define ROW(i, A, B) x = _mm512_set1_ps(r[(i) * ldv + q]); A = _mm512_fmadd_ps(x, w0, A); B = _mm512_fmadd_ps(x, w1, B);
            ROW(0, a0, a1) ROW(1, b0, b1) ROW(2, c0, c1) ROW(3, d0, d1)
            ROW(4, e0, e1) ROW(5, f0, f1) ROW(6, g0, g1) ROW(7, h0, h1)
#undef ROW
        }
        float *o = out + t * ldo;
#define ST(i, A, B) _mm512_storeu_ps(o + (i) * ldo, A); _mm512_storeu_ps(o + (i) * ldo + 16, B);
        ST(0, a0, a1) ST(1, b0, b1) ST(2, c0, c1) ST(3, d0, d1) ST(4, e0, e1) ST(5, f0, f1) ST(6, g0, g1) ST(7, h0, h1)
#undef ST
    }
    for (; t < rows; t++) {
        __m512 a0 = _mm512_setzero_ps(), a1 = a0;
        for (int64_t q = 0; q < c; q++) {
            const __m512 x = _mm512_set1_ps(v[t * ldv + q]);
            a0 = _mm512_fmadd_ps(x, _mm512_loadu_ps(up + q * PW), a0);
            a1 = _mm512_fmadd_ps(x, _mm512_loadu_ps(up + q * PW + 16), a1);
        }
        _mm512_storeu_ps(out + t * ldo, a0);
        _mm512_storeu_ps(out + t * ldo + 16, a1);
    }
}

typedef struct { const float *v, *u; float *mm; int64_t np, tiles, c, k; } gemm_job_t;

/* work item i = (p, panel, row block of RB rows) */
#define RB 256
static void gemm_range(const void *ctx, int64_t i0, int64_t i1) {
    const gemm_job_t *g = (const gemm_job_t *)ctx;
    const int64_t panels = g->k / PW, blocks = (g->tiles + RB - 1) / RB;
    for (int64_t i = i0; i < i1; i++) {
        const int64_t blk = i % blocks, j = (i / blocks) % panels, p = i / (blocks * panels);
        const int64_t t0 = blk * RB, rows = g->tiles - t0 < RB ? g->tiles - t0 : RB;
        gemm_rows(g->v + (p * g->tiles + t0) * g->c, g->u + (p * panels + j) * g->c * PW,
                  g->mm + (p * g->tiles + t0) * g->k + j * PW, rows, g->c, g->c, g->k);
    }
}
#endif

/* The AVX-512 GEMMs run only with the AVX-512 variant chosen (so choosing AVX2 forces the torch.bmm path). */
int wino_has_gemm(void) {
#ifdef HAVE_GEMM
    return wino_isa() == 2;
#else
    return 0;
#endif
}

void wino_gemm(const float *v, const float *u, float *mm, int64_t np, int64_t tiles, int64_t c, int64_t k, int threads) {
#ifdef HAVE_GEMM
    const gemm_job_t g = {v, u, mm, np, tiles, c, k};
    parallel(gemm_range, &g, np * (k / PW) * ((tiles + RB - 1) / RB), threads);
#else
    (void)v; (void)u; (void)mm; (void)np; (void)tiles; (void)c; (void)k; (void)threads;
#endif
}

void wino_input(const float *x, float *v, int64_t nb, int64_t h, int64_t w, int64_t c, int64_t m, int threads) {
    job_t j;
    memset(&j, 0, sizeof j);
    j.x = x; j.v = v; j.nb = nb; j.h = h; j.w = w; j.c = c; j.m = m;
    parallel(pick(0), &j, nb * ((h + m - 1) / m) * ((w + m - 1) / m), threads);
}

void wino_output(const float *mm, float *y, const float *bias, const float *res, int64_t nb, int64_t h, int64_t w,
                 int64_t k, int64_t m, int relu, int threads) {
    job_t j;
    memset(&j, 0, sizeof j);
    j.x = mm; j.y = y; j.bias = bias; j.res = res; j.nb = nb; j.h = h; j.w = w; j.c = k; j.m = m; j.relu = relu;
    parallel(pick(1), &j, nb * ((h + m - 1) / m) * ((w + m - 1) / m), threads);
}
