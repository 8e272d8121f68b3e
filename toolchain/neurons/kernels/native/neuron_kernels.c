/* The fused IF / LIF neuron of toolchain/neurons/kernels/subtractive.py (`_SubtractiveRun`), forward and backward over all time
 * steps in one pass over memory.
 *
 * The torch-op implementation runs each step as several whole-tensor ops (add, compare, subtract, the 1-byte
 * copy, pooling; in the backward the surrogate and a multiply-add), each a pass over the layer's neurons. Here
 * each block of neurons keeps its state in cache and runs all T steps: the forward reads each current once and
 * writes each (pooled) spike and each 1-byte dt once; the backward reads each incoming gradient and dt once and
 * writes each current's gradient once. The arithmetic is the torch-op implementation's, op for op and in the
 * same order (compiled with -ffp-contract=off, so no multiply-add is fused): the results are the same, except
 * that the STDB factor exp(-beta * dt) comes from a table that torch computed.
 *
 * Buffers are (T, n) in memory order, one step after the other; with pooling (k x k average, non-overlapping)
 * a step is blocks of k rows of W pixels of C channels, innermost first (channels-last: the whole (B, H, W, C)
 * image; contiguous NCHW: C = 1, each (b, c) plane) and the pooled output has the same layout at 1/k x 1/k.
 * Both run on a block of steps at a time too (toolchain/neurons/kernels/stack.py): the forward then starts from the
 * state (v, steps since the last spike) the previous block left and adds to the spike counts, and the backward
 * starts from the gradient the later block carried back.
 *
 * The quantization-aware CUBA neuron (`_CubaRun`: Loihi's current-based LIF, reset to zero, 24-bit state) runs
 * the same way, all T steps per block of neurons, forward and backward, without pooling or blocks of steps.
 *
 * The emulator's bit-exact CUBA neuron (hw_targets/simulators/emulator.py `_neuron`: Lava's fixed-point
 * PyLifModelBitAcc, integer arithmetic with Lava's int32 wraps) runs all T steps per block of one sample's neurons.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PLAIN_BLOCK 512
#define NEVER 255           /* the dt code of a neuron with no spike yet in this sample (T < 255 never counts to it) */

typedef struct {
    int64_t T, n, W, C, k, group, nblocks;
    const void *cur; void *out; uint8_t *dts; void *x; void *v_final; void *dt_final;
    const void *mask; int32_t *count; uint8_t *d_state; int carry; uint8_t *codes;
    double theta, c, leak; int use_c;
    const void *g_sp; const void *g_v; const uint8_t *dts_in; const void *lut; const void *sg; void *grad;
    const void *g_carry; double scale; int64_t t_lo, t_hi, t_base;
    const void *bias; uint8_t *flags; void *u_final; const void *g_u; void *g_bias; int i_decay, v_decay;
    int64_t per_sample, bias_stride, vth, du, dv; int fast, a_int64; int64_t *v_hist, *u_hist;  /* lava_cuba */
    int sd_mode;                                                                                /* sigma_delta */
    int64_t b0, b1; int status;
} job_t;

/* ---- forward ---------------------------------------------------------------------------------------------- */
/* One step of a block, branch-free so that it vectorizes: LEAK is the leak statement, TEST sets s (0 or 1). */
#define STEP_LOOP(TYPE, LEAK, TEST)                                                                              \
    for (int64_t j = 0; j < len; j++) {                                                                        \
        TYPE vv = v[j];                                                                                        \
        LEAK;                                                                                                  \
        vv = vv + I[j];                                                                                        \
        TYPE s;                                                                                                \
        TEST;                                                                                                  \
        v[j] = vv - theta * s;                                                                                 \
        sp[j] = s;                                                                                             \
        uint8_t dj = d[j];                                                                                     \
        dt[j] = dj;                                                                                            \
        cnt[j] += s;                                                                                           \
        d[j] = s > (TYPE)0 ? (uint8_t)0 : (uint8_t)(dj + (dj != NEVER));                                       \
    }

#define STEP_TESTS(TYPE, LEAK)                                                                                   \
    if (a->use_c) { STEP_LOOP(TYPE, LEAK, s = vv > c ? (TYPE)1 : (TYPE)0) }                                    \
    else if (xt) { STEP_LOOP(TYPE, LEAK, TYPE q = vv / theta; q = q - (TYPE)1; xt[j] = q;                     \
                                         s = q > (TYPE)0 ? (TYPE)1 : (TYPE)0) }                                \
    else { STEP_LOOP(TYPE, LEAK, TYPE q = vv / theta; q = q - (TYPE)1; s = q > (TYPE)0 ? (TYPE)1 : (TYPE)0) }

#define FORWARD(TYPE, NAME)                                                                                      \
static void NAME(job_t *a) {                                                                                   \
    const int64_t T = a->T, n = a->n, k = a->k, group = a->group, W = a->W, C = a->C;                         \
    const int64_t np = k > 1 ? n / (k * k) : n, pg = k > 1 ? group / (k * k) : group;                          \
    const TYPE theta = (TYPE)a->theta, c = (TYPE)a->c, leak = (TYPE)a->leak, k2 = (TYPE)(k * k);               \
    const TYPE *cur = (const TYPE *)a->cur; TYPE *out = (TYPE *)a->out, *xs = (TYPE *)a->x;                    \
    TYPE *v = malloc(sizeof(TYPE) * group), *sp = malloc(sizeof(TYPE) * group), *acc = malloc(sizeof(TYPE) * pg); \
    uint8_t *d = malloc(group), *dt_scratch = malloc(group);                                                   \
    TYPE *cnt = malloc(sizeof(TYPE) * group);    /* the spike counts, exact in TYPE (T < 255) */               \
    const TYPE *mask = (const TYPE *)a->mask;                                                                  \
    if (!v || !sp || !acc || !d || !dt_scratch || !cnt) {                                                      \
        a->status = -1; free(v); free(sp); free(acc); free(d); free(dt_scratch); free(cnt); return;           \
    }                                                                                                          \
    for (int64_t b = a->b0; b < a->b1; b++) {                                                                  \
        const int64_t i0 = b * group, len = (n - i0 < group) ? n - i0 : group;                                 \
        if (a->carry) {                          /* a later block of steps: the state the earlier one left */  \
            for (int64_t j = 0; j < len; j++) {                                                                \
                v[j] = ((TYPE *)a->v_final)[i0 + j]; d[j] = a->d_state[i0 + j]; cnt[j] = 0;                    \
            }                                                                                                  \
        } else {                                                                                               \
            for (int64_t j = 0; j < len; j++) { v[j] = 0; d[j] = NEVER; cnt[j] = 0; }                          \
        }                                                                                                      \
        for (int64_t t = 0; t < T; t++) {                                                                      \
            const TYPE *restrict I = cur + t * n + i0;                                                         \
            uint8_t *restrict dt = a->dts ? a->dts + t * n + i0 : dt_scratch;                                  \
            TYPE *restrict xt = xs ? xs + t * n + i0 : NULL;                                                   \
            if (leak != (TYPE)1) { STEP_TESTS(TYPE, vv = vv * leak) }                                          \
            else { STEP_TESTS(TYPE, (void)0) }                                                                 \
            if (k > 1) {                                                                                       \
                const int64_t Wp = W / k;                                                                      \
                for (int64_t q = 0; q < pg; q++) acc[q] = 0;                                                   \
                for (int64_t hh = 0; hh < k; hh++)                                                             \
                    for (int64_t wp = 0; wp < Wp; wp++)                                                        \
                        for (int64_t ww = 0; ww < k; ww++) {                                                   \
                            const TYPE *restrict src = sp + (hh * W + wp * k + ww) * C;                        \
                            TYPE *restrict dst = acc + wp * C;                                                 \
                            for (int64_t ch = 0; ch < C; ch++) dst[ch] += src[ch];                             \
                        }                                                                                      \
                TYPE *restrict o = out + t * np + b * pg;                                                      \
                for (int64_t q = 0; q < pg; q++) o[q] = acc[q] / k2;                                           \
                if (a->codes) {                  /* the pooled spikes as counts of k*k */                      \
                    uint8_t *restrict cd = a->codes + t * np + b * pg;                                         \
                    for (int64_t q = 0; q < pg; q++) cd[q] = (uint8_t)acc[q];                                  \
                }                                                                                              \
            } else if (mask) {                 /* dropout after the neurons: one mask for all steps */          \
                TYPE *restrict o = out + t * np + i0; const TYPE *restrict mk = mask + i0;                     \
                for (int64_t j = 0; j < len; j++) o[j] = sp[j] * mk[j];                                        \
            } else {                                                                                           \
                memcpy(out + t * np + i0, sp, sizeof(TYPE) * len);                                             \
            }                                                                                                  \
            if (a->codes && k <= 1) {            /* the spikes as 0/1 (before any dropout mask) */             \
                uint8_t *restrict cd = a->codes + t * np + i0;                                                 \
                for (int64_t j = 0; j < len; j++) cd[j] = (uint8_t)sp[j];                                      \
            }                                                                                                  \
        }                                                                                                      \
        for (int64_t j = 0; j < len; j++) ((TYPE *)a->v_final)[i0 + j] = v[j];                               \
        if (a->dt_final) for (int64_t j = 0; j < len; j++)                                                     \
            ((TYPE *)a->dt_final)[i0 + j] = d[j] == NEVER ? (TYPE)INFINITY : (TYPE)d[j];                       \
        if (a->d_state) for (int64_t j = 0; j < len; j++) a->d_state[i0 + j] = d[j];                         \
        if (a->count && a->carry) for (int64_t j = 0; j < len; j++) a->count[i0 + j] += (int32_t)cnt[j];     \
        else if (a->count) for (int64_t j = 0; j < len; j++) a->count[i0 + j] = (int32_t)cnt[j];             \
    }                                                                                                          \
    free(v); free(sp); free(acc); free(d); free(dt_scratch); free(cnt);                                        \
}
FORWARD(float, forward_f32)
FORWARD(double, forward_f64)

/* ---- backward ---------------------------------------------------------------------------------------------- */
/* Steps t_hi - 1 down to t_lo of T; g_sp, dts and grad hold steps from t_base on (t_base <= t_lo), sg, if given,
 * steps t_lo..t_hi - 1. The gradient at t_hi, if t_hi < T, is g_carry if given, else already in grad.
 * With f[t] = the surrogate's factor (lut[dt] for STDB: 256 entries, one per dt code, lut[NEVER] = 0; else the precomputed sg):
 *   gI[T-1] = (g * f) * scale (+ g_v);  gI[t] = leak * gI[t+1] + (scale * g[t]) * f[t]   (leak 1: no multiply)
 * g = the incoming gradient of the spikes, un-pooled (g_pooled / k^2) when pooled. */
#define BWD_LOOP(TYPE, FACTOR)                                                                                   \
    if (t == T - 1) {                                                                                          \
        for (int64_t j = 0; j < len; j++) {                                                                    \
            TYPE r = 0;                                                                                        \
            if (gs) { r = g[j] * (FACTOR); if (scale != (TYPE)1) r = r * scale; }                              \
            if (gv) r = r + gv[i0 + j];                                                                        \
            acc[j] = r; gi[j] = r;                                                                             \
        }                                                                                                      \
    } else if (!gs) {                                                                                          \
        for (int64_t j = 0; j < len; j++) { TYPE r = acc[j] * leak; acc[j] = r; gi[j] = r; }                   \
    } else if (leak == (TYPE)1) {                                                                              \
        for (int64_t j = 0; j < len; j++) { TYPE r = acc[j] + (scale * g[j]) * (FACTOR); acc[j] = r; gi[j] = r; } \
    } else {                                                                                                   \
        for (int64_t j = 0; j < len; j++) {                                                                    \
            TYPE r = acc[j] * leak; r = r + (scale * g[j]) * (FACTOR); acc[j] = r; gi[j] = r;                  \
        }                                                                                                      \
    }

#define BACKWARD(TYPE, NAME)                                                                                     \
static void NAME(job_t *a) {                                                                                   \
    const int64_t T = a->T, n = a->n, k = a->k, group = a->group, W = a->W, C = a->C;                         \
    const int64_t np = k > 1 ? n / (k * k) : n, pg = k > 1 ? group / (k * k) : group;                          \
    const TYPE leak = (TYPE)a->leak, scale = (TYPE)a->scale, k2 = (TYPE)(k * k);                               \
    const TYPE *gs = (const TYPE *)a->g_sp, *gv = (const TYPE *)a->g_v, *lut = (const TYPE *)a->lut;          \
    const TYPE *sgs = (const TYPE *)a->sg, *mask = (const TYPE *)a->mask; TYPE *grad = (TYPE *)a->grad;        \
    TYPE *acc = malloc(sizeof(TYPE) * group), *gbuf = malloc(sizeof(TYPE) * group);                            \
    if (!acc || !gbuf) { a->status = -1; free(acc); free(gbuf); return; }                                       \
    for (int64_t b = a->b0; b < a->b1; b++) {                                                                  \
        const int64_t i0 = b * group, len = (n - i0 < group) ? n - i0 : group;                                 \
        const int64_t tb = a->t_base;                                                                          \
        if (a->t_hi < T) memcpy(acc, a->g_carry ? (const TYPE *)a->g_carry + i0 : grad + (a->t_hi - tb) * n + i0, \
                                sizeof(TYPE) * len);                                /* carried from t_hi */   \
        for (int64_t t = a->t_hi - 1; t >= a->t_lo; t--) {                                                     \
            const TYPE *restrict g = gbuf;                                                                     \
            if (gs && k > 1) {                                                                                 \
                const int64_t Wp = W / k; const TYPE *gp = gs + (t - tb) * np + b * pg;                               \
                for (int64_t hh = 0; hh < k; hh++)                                                             \
                    for (int64_t wp = 0; wp < Wp; wp++)                                                        \
                        for (int64_t ww = 0; ww < k; ww++) {                                                   \
                            TYPE *restrict dst = gbuf + (hh * W + wp * k + ww) * C;                            \
                            const TYPE *restrict src = gp + wp * C;                                            \
                            for (int64_t ch = 0; ch < C; ch++) dst[ch] = src[ch] / k2;                         \
                        }                                                                                      \
            } else if (gs && mask) {                                                                           \
                const TYPE *restrict src = gs + (t - tb) * n + i0, *restrict mk = mask + i0;                          \
                for (int64_t j = 0; j < len; j++) gbuf[j] = src[j] * mk[j];                                    \
            } else if (gs) {                                                                                   \
                g = gs + (t - tb) * n + i0;                                                                    \
            }                                                                                                  \
            TYPE *restrict gi = grad + (t - tb) * n + i0;                                                           \
            if (sgs) { const TYPE *restrict sgt = sgs + (t - a->t_lo) * n + i0; BWD_LOOP(TYPE, sgt[j]) }      \
            else if (gs) { const uint8_t *restrict dt = a->dts_in + (t - tb) * n + i0; BWD_LOOP(TYPE, lut[dt[j]]) }  \
            else { BWD_LOOP(TYPE, (TYPE)0) }                                                                   \
        }                                                                                                      \
    }                                                                                                          \
    free(acc); free(gbuf);                                                                                     \
}
BACKWARD(float, backward_f32)
BACKWARD(double, backward_f64)

/* ---- the CUBA neuron (toolchain/neurons/kernels/cuba.py `_CubaRun`, quantization-aware training) ---------------------------
 * The loop of `cuba_step` per block of neurons over all T steps, op for op as torch computes it (S = 2^23 - 1):
 *   u = wrap24(decay(u) + a * 64);  v1 = decay(v) + u (+ bias, already times 64);  v2 = clamp(v1, -S, S)
 *   x = v2 / vth64 - 1;  s = x > 0;  v = v2 * (1 - s)
 * decay(x) = x (decay 0), 0 (decay >= 4096), trunc(x * r), r = (4096 - decay) / 4096. flags: bit 0 the spike,
 * bit 1 -S <= v1 <= S. The backward is the gradient autograd takes through that loop (see kernels/cuba.py). */
#define CUBA_SPIKED 1
#define CUBA_INSIDE 2
/* decay modes: 0 none (decay 0), 1 all (decay >= 4096: zeros), 2 trunc(x * r) (+ 0: the straight-through rounding
 * x + (trunc(x) - x) gives +0 where trunc gives -0). Constants in each specialized copy of the step (no branch). */
#define CUBA_MODE(D) ((D) == 0 ? 0 : ((D) >= 4096 ? 1 : 2))
#define CUBA_DECAY(TYPE, TRUNC, X, MODE, R) ((MODE) == 0 ? (X) : ((MODE) == 1 ? (TYPE)0 : TRUNC((X) * (R)) + (TYPE)0))
#define CUBA_FACTOR(TYPE, D) ((D) == 0 ? (TYPE)1 : ((D) >= 4096 ? (TYPE)0 : (TYPE)((4096.0 - (D)) / 4096.0)))

/* One step of a block of neurons, specialized by the constants MU, MV (decay modes of u, v) and HAS_BIAS when
 * inlined, so that it vectorizes. The optional outputs (flags, dt, x) go to scratch memory when not asked for. */
#define CUBA_STEP_FN(TYPE, TRUNC, NAME)                                                                          \
static inline __attribute__((always_inline)) void NAME(                                                        \
        int64_t len, const TYPE *restrict I, const TYPE *restrict bias, TYPE *restrict sp, uint8_t *restrict fl, \
        uint8_t *restrict dt, TYPE *restrict xt, TYPE *restrict u, TYPE *restrict v, uint8_t *restrict d,     \
        const TYPE ri, const TYPE rv, const TYPE vth, const int MU, const int MV, const int HAS_BIAS) {       \
    const TYPE m = (TYPE)8388608, m2 = (TYPE)16777216, S = (TYPE)8388607;                                       \
    for (int64_t j = 0; j < len; j++) {                                                                        \
        const TYPE u0 = u[j], v0 = v[j];                                                                       \
        TYPE uu = CUBA_DECAY(TYPE, TRUNC, u0, MU, ri) + I[j] * (TYPE)64;                                       \
        const TYPE w = uu > m ? uu - m2 : uu;                                                                  \
        uu = w <= -m ? uu + m2 : w;                                                                            \
        TYPE vv = CUBA_DECAY(TYPE, TRUNC, v0, MV, rv) + uu;                                                    \
        if (HAS_BIAS) vv = vv + bias[j];                                                                       \
        const uint8_t inside = (vv >= -S) & (vv <= S);                                                         \
        vv = vv < -S ? -S : vv;                                                                                \
        vv = vv > S ? S : vv;                                                                                  \
        TYPE q = vv / vth; q = q - (TYPE)1;                                                                    \
        const TYPE s = q > (TYPE)0 ? (TYPE)1 : (TYPE)0;                                                        \
        const uint8_t spiked = q > (TYPE)0;                                                                    \
        xt[j] = q;                                                                                             \
        fl[j] = (uint8_t)(spiked | (inside << 1));                                                             \
        const uint8_t dj = d[j];                                                                               \
        dt[j] = dj;                                                                                            \
        d[j] = spiked ? (uint8_t)0 : (uint8_t)(dj + (dj != NEVER));                                                        \
        sp[j] = s;                                                                                             \
        v[j] = vv * ((TYPE)1 - s);                                                                             \
        u[j] = uu;                                                                                             \
    }                                                                                                          \
}
CUBA_STEP_FN(float, truncf, cuba_step_f32)
CUBA_STEP_FN(double, trunc, cuba_step_f64)

/* The step's 18 specializations (3 x 3 decay modes, bias or not), selected by KEY = (MU * 3 + MV) * 2 + HAS_BIAS */
#define CUBA_CASE(CALL, MU, MV, B) case ((MU) * 3 + (MV)) * 2 + (B): CALL(MU, MV, B); break;
#define CUBA_CASES_B(CALL, MU, MV) CUBA_CASE(CALL, MU, MV, 0) CUBA_CASE(CALL, MU, MV, 1)
#define CUBA_CASES_V(CALL, MU) CUBA_CASES_B(CALL, MU, 0) CUBA_CASES_B(CALL, MU, 1) CUBA_CASES_B(CALL, MU, 2)
#define CUBA_SWITCH(CALL, KEY) switch (KEY) { CUBA_CASES_V(CALL, 0) CUBA_CASES_V(CALL, 1) CUBA_CASES_V(CALL, 2) }

#define CUBA_FORWARD(TYPE, STEP, NAME)                                                                           \
static void NAME(job_t *a) {                                                                                   \
    const int64_t T = a->T, n = a->n, group = a->group;                                                        \
    const TYPE vth = (TYPE)a->theta, ri = CUBA_FACTOR(TYPE, a->i_decay), rv = CUBA_FACTOR(TYPE, a->v_decay);   \
    const int key = (CUBA_MODE(a->i_decay) * 3 + CUBA_MODE(a->v_decay)) * 2 + (a->bias != NULL);              \
    const TYPE *cur = (const TYPE *)a->cur, *bias = (const TYPE *)a->bias;                                     \
    TYPE *out = (TYPE *)a->out, *xs = (TYPE *)a->x;                                                            \
    TYPE *u = malloc(sizeof(TYPE) * group), *v = malloc(sizeof(TYPE) * group);                                 \
    TYPE *x_scratch = malloc(sizeof(TYPE) * group);                                                            \
    uint8_t *d = malloc(group), *fl_scratch = malloc(group), *dt_scratch = malloc(group);                      \
    if (!u || !v || !x_scratch || !d || !fl_scratch || !dt_scratch) {                                          \
        a->status = -1; free(u); free(v); free(x_scratch); free(d); free(fl_scratch); free(dt_scratch); return; \
    }                                                                                                          \
    for (int64_t b = a->b0; b < a->b1; b++) {                                                                  \
        const int64_t i0 = b * group, len = (n - i0 < group) ? n - i0 : group;                                 \
        for (int64_t j = 0; j < len; j++) { u[j] = 0; v[j] = 0; d[j] = NEVER; }                                \
        for (int64_t t = 0; t < T; t++) {                                                                      \
            const TYPE *I = cur + t * n + i0; TYPE *sp = out + t * n + i0;                                     \
            uint8_t *fl = a->flags ? a->flags + t * n + i0 : fl_scratch;                                       \
            uint8_t *dt = a->dts ? a->dts + t * n + i0 : dt_scratch;                                           \
            TYPE *xt = xs ? xs + t * n + i0 : x_scratch;                                                       \
            const TYPE *bb = bias ? bias + i0 : NULL;                                                          \
            _Pragma("GCC diagnostic push")                                                                     \
            _Pragma("GCC diagnostic ignored \"-Wimplicit-fallthrough\"")                                       \
            CUBA_SWITCH(CUBA_CALL_##STEP, key)                                                                 \
            _Pragma("GCC diagnostic pop")                                                                      \
        }                                                                                                      \
        for (int64_t j = 0; j < len; j++) {                                                                    \
            ((TYPE *)a->v_final)[i0 + j] = v[j]; ((TYPE *)a->u_final)[i0 + j] = u[j];                          \
            ((TYPE *)a->dt_final)[i0 + j] = d[j] == NEVER ? (TYPE)INFINITY : (TYPE)d[j];                       \
        }                                                                                                      \
    }                                                                                                          \
    free(u); free(v); free(x_scratch); free(d); free(fl_scratch); free(dt_scratch);                            \
}
#define CUBA_CALL_cuba_step_f32(MU, MV, B) cuba_step_f32(len, I, bb, sp, fl, dt, xt, u, v, d, ri, rv, vth, MU, MV, B)
#define CUBA_CALL_cuba_step_f64(MU, MV, B) cuba_step_f64(len, I, bb, sp, fl, dt, xt, u, v, d, ri, rv, vth, MU, MV, B)
CUBA_FORWARD(float, cuba_step_f32, cuba_forward_f32)
CUBA_FORWARD(double, cuba_step_f64, cuba_forward_f64)

/* Steps T - 1 down to 0; gV, gU (the gradients carried into v and u) start from g_v, g_u (or 0):
 *   g2 = gV * (1 - s) (+ (g_sp * f) / vth64);  g1 = inside ? g2 : 0;  gp = gU + g1;  grad = gp * 64
 *   gV = g1 * r_v;  gU = gp * r_i;  g_bias = the sum of g1 over the steps.  f = lut[dt] if lut, else sg.
 * SPIKE_TERM is the incoming spike gradient's statement (none without one). */
#define CUBA_BWD_STEP(TYPE, SPIKE_TERM)                                                                          \
    for (int64_t j = 0; j < len; j++) {                                                                        \
        const uint8_t f8 = fl[j];                                                                              \
        const TYPE c0 = cv[j], u0 = cu[j];                                                                     \
        TYPE g2 = c0 * ((TYPE)1 - (TYPE)(f8 & CUBA_SPIKED));                                                   \
        SPIKE_TERM;                                                                                            \
        const TYPE g1 = (f8 & CUBA_INSIDE) ? g2 : (TYPE)0;                                                     \
        cb[j] += g1;                                                                                           \
        const TYPE gp = u0 + g1;                                                                               \
        gi[j] = gp * (TYPE)64;                                                                                 \
        cv[j] = g1 * rv;                                                                                       \
        cu[j] = gp * ri;                                                                                       \
    }

#define CUBA_BACKWARD(TYPE, NAME)                                                                                \
static void NAME(job_t *a) {                                                                                   \
    const int64_t T = a->T, n = a->n, group = a->group;                                                        \
    const TYPE vth = (TYPE)a->theta, ri = CUBA_FACTOR(TYPE, a->i_decay), rv = CUBA_FACTOR(TYPE, a->v_decay);   \
    const TYPE *gs = (const TYPE *)a->g_sp, *gv = (const TYPE *)a->g_v, *gu = (const TYPE *)a->g_u;           \
    const TYPE *lut = (const TYPE *)a->lut, *sgs = (const TYPE *)a->sg;                                        \
    TYPE *grad = (TYPE *)a->grad, *gb = (TYPE *)a->g_bias;                                                     \
    TYPE *cv = malloc(sizeof(TYPE) * group), *cu = malloc(sizeof(TYPE) * group), *cb = malloc(sizeof(TYPE) * group); \
    TYPE *fs = malloc(sizeof(TYPE) * group);    /* the surrogate's factor from the table, per step */           \
    if (!cv || !cu || !cb || !fs) { a->status = -1; free(cv); free(cu); free(cb); free(fs); return; }          \
    for (int64_t b = a->b0; b < a->b1; b++) {                                                                  \
        const int64_t i0 = b * group, len = (n - i0 < group) ? n - i0 : group;                                 \
        for (int64_t j = 0; j < len; j++) {                                                                    \
            cv[j] = gv ? gv[i0 + j] : (TYPE)0; cu[j] = gu ? gu[i0 + j] : (TYPE)0; cb[j] = 0;                   \
        }                                                                                                      \
        for (int64_t t = T - 1; t >= 0; t--) {                                                                 \
            const int64_t o = t * n + i0;                                                                      \
            const uint8_t *restrict fl = a->flags + o;                                                         \
            TYPE *restrict gi = grad + o;                                                                      \
            if (gs) {                                                                                          \
                const TYPE *restrict g = gs + o, *restrict f = sgs ? sgs + o : fs;                             \
                if (!sgs) { const uint8_t *restrict dt = a->dts_in + o; for (int64_t j = 0; j < len; j++) fs[j] = lut[dt[j]]; } \
                CUBA_BWD_STEP(TYPE, g2 = g2 + (g[j] * f[j]) / vth)                                             \
            } else {                                                                                           \
                CUBA_BWD_STEP(TYPE, (void)0)                                                                   \
            }                                                                                                  \
        }                                                                                                      \
        if (gb) for (int64_t j = 0; j < len; j++) gb[i0 + j] = cb[j];                                          \
    }                                                                                                          \
    free(cv); free(cu); free(cb); free(fs);                                                                    \
}
CUBA_BACKWARD(float, cuba_backward_f32)
CUBA_BACKWARD(double, cuba_backward_f64)

/* ---- the emulator's bit-exact CUBA neuron (hw_targets/simulators/emulator.py `_neuron`) ------------------------
 * Lava's PyLifModelBitAcc on a block of one sample's neurons over all T steps, op for op as `_neuron`'s torch ops
 * compute it, each of their wraps explicit: unsigned arithmetic wherever a torch integer op may wrap (never C's
 * signed-overflow UB), arithmetic right shifts of signed values and modular narrowing casts (both defined by gcc and
 * clang). Two versions, as `_neuron` has them (its docstring and `_fast_ok` say when each runs):
 *   FAST, int32 lanes:  act = int32(a) << 6;  dc = decay32(u) + act;  vv = decay32(v) + u + int32(bias)
 *   WIDE, int64 lanes:  act = wrap32(a << 6);  dc = wrap32(decay(u) + act);  vv = wrap32(decay(v) + u + bias)
 * then in both  u = dc - (((2^23 - dc) >> SH) & 2^24) + (((dc + 2^23 - 1) >> SH) & 2^24)   (Lava's conditional wrap)
 *   vv = clamp(vv, -(2^23 - 1), 2^23 - 1);  spk = (vth - vv) >> SH (-1 where vv > vth);  v = vv & ~spk;  s = -spk
 * with SH = 31 / 63, decay(x) = wrap32(sign(x m) * (|x m| >> 12)), decay32(x) = sign(x) * ((|x| >> 12) m +
 * (((|x| & 4095) m) >> 12)), m = 4096 - d (d = 0: x, d = 4096: 0, as the torch code shortcuts them).
 * a: (b, T, n) int32 or int64; bias (<< 6): int64, n per sample, bias_stride apart (0: the same for every sample);
 * spikes (b, T, n) uint8; v_hist, u_hist (b, T, n) int64, each optional (NULL). */
#define LAVA_M24 8388608
#define LAVA_SAT 8388607
#define LAVA_MODE(D) ((D) == 0 ? 0 : ((D) == 4096 ? 1 : 2))

static inline __attribute__((always_inline)) int32_t lava_decay32(int32_t x, int32_t m, const int MODE) {
    if (MODE == 0) return x;
    if (MODE == 1) return 0;
    const int32_t ax = (int32_t)(x < 0 ? 0u - (uint32_t)x : (uint32_t)x);
    const int32_t lo = (int32_t)((uint32_t)(ax & 4095) * (uint32_t)m) >> 12;
    const int32_t q = (int32_t)((uint32_t)(ax >> 12) * (uint32_t)m + (uint32_t)lo);
    return x > 0 ? q : (x < 0 ? (int32_t)(0u - (uint32_t)q) : 0);
}

static inline __attribute__((always_inline)) int64_t lava_wrap32(uint64_t x) { return (int64_t)(int32_t)(uint32_t)x; }

static inline __attribute__((always_inline)) int64_t lava_decay64(int64_t x, int64_t m, const int MODE) {
    if (MODE == 0) return lava_wrap32((uint64_t)x);     /* x * 4096 >> 12 == x: |x| < 2^32 here */
    if (MODE == 1) return 0;
    const int64_t p = (int64_t)((uint64_t)x * (uint64_t)m);
    const int64_t q = (int64_t)(p < 0 ? 0 - (uint64_t)p : (uint64_t)p) >> 12;
    return lava_wrap32(p > 0 ? (uint64_t)q : (p < 0 ? 0 - (uint64_t)q : 0));
}

/* One step of `len` neurons, specialized by the constants MU, MV (decay modes) and HB (a bias) when inlined. STATE
 * is int32_t (FAST) or int64_t (WIDE), USTATE its unsigned twin, DECAY lava_decay32 or lava_decay64. In FAST, the
 * casts through (int32_t)(uint32_t) change nothing: they are WIDE's wrap32. */
#define LAVA_STEP(STATE, USTATE, DECAY, NAME)                                                                    \
static inline __attribute__((always_inline)) void NAME(                                                        \
        int64_t len, const STATE *restrict X, const int64_t *restrict bias, uint8_t *restrict sp,              \
        STATE *restrict u, STATE *restrict v, const STATE mu, const STATE mv, const STATE vth,                 \
        const int MU, const int MV, const int HB) {                                                            \
    const int SH = 8 * (int)sizeof(STATE) - 1;                                                                 \
    for (int64_t j = 0; j < len; j++) {                                                                        \
        const STATE dc = (STATE)(int32_t)(uint32_t)((USTATE)DECAY(u[j], mu, MU) + (USTATE)X[j]);              \
        const STATE gt = (STATE)((USTATE)LAVA_M24 - (USTATE)dc) >> SH;                                        \
        const STATE le = (STATE)((USTATE)dc + (USTATE)(LAVA_M24 - 1)) >> SH;                                  \
        const STATE uu = (STATE)((USTATE)dc - (USTATE)(gt & (2 * LAVA_M24)) + (USTATE)(le & (2 * LAVA_M24))); \
        USTATE w = (USTATE)DECAY(v[j], mv, MV) + (USTATE)uu;                                                   \
        if (HB) w += (USTATE)(uint64_t)bias[j];                                                                \
        STATE vv = (STATE)(int32_t)(uint32_t)w;                                                                \
        vv = vv < -LAVA_SAT ? -LAVA_SAT : vv;                                                                  \
        vv = vv > LAVA_SAT ? LAVA_SAT : vv;                                                                    \
        const STATE spk = (STATE)((USTATE)vth - (USTATE)vv) >> SH;                                            \
        v[j] = vv & ~spk;                                                                                      \
        u[j] = uu;                                                                                             \
        sp[j] = (uint8_t)(0u - (USTATE)spk);                                                                   \
    }                                                                                                          \
}
LAVA_STEP(int32_t, uint32_t, lava_decay32, lava_fast)
LAVA_STEP(int64_t, uint64_t, lava_decay64, lava_wide)

/* All T steps of each block (one sample's `group` neurons): state in cache, each input read once, each output
 * written once. STATE is the lanes' type, STEP the step function; each step's act = a << 6 (as the lanes' int32
 * or Lava's wrap32) goes to a scratch row first (a loop of its own: the step then loads lanes of one width). */
#define LAVA_CUBA(ATYPE, STATE, STEP, NAME)                                                                      \
static void NAME(job_t *a) {                                                                                   \
    const int64_t T = a->T, n = a->n, group = a->group, per = a->per_sample;                                   \
    const STATE mu = (STATE)(4096 - a->du), mv = (STATE)(4096 - a->dv), vth = (STATE)a->vth;                   \
    const int key = (LAVA_MODE(a->du) * 3 + LAVA_MODE(a->dv)) * 2 + (a->bias != NULL);                        \
    const ATYPE *act = (const ATYPE *)a->cur; uint8_t *spikes = (uint8_t *)a->out;                              \
    int64_t *restrict vh = a->v_hist, *restrict uh = a->u_hist;                                                \
    STATE *u = malloc(sizeof(STATE) * group), *v = malloc(sizeof(STATE) * group);                              \
    STATE *restrict x = malloc(sizeof(STATE) * group);                                                         \
    if (!u || !v || !x) { a->status = -1; free(u); free(v); free(x); return; }                                 \
    for (int64_t blk = a->b0; blk < a->b1; blk++) {                                                            \
        const int64_t s = blk / per, j0 = (blk % per) * group, len = (n - j0 < group) ? n - j0 : group;        \
        const int64_t *bb = a->bias ? (const int64_t *)a->bias + s * a->bias_stride + j0 : NULL;               \
        for (int64_t j = 0; j < len; j++) { u[j] = 0; v[j] = 0; }                                              \
        for (int64_t t = 0; t < T; t++) {                                                                      \
            const int64_t o = (s * T + t) * n + j0;                                                            \
            const ATYPE *restrict A = act + o; uint8_t *sp = spikes + o;                                       \
            for (int64_t j = 0; j < len; j++) x[j] = (STATE)(int32_t)(uint32_t)((uint64_t)A[j] << 6);          \
            _Pragma("GCC diagnostic push")                                                                     \
            _Pragma("GCC diagnostic ignored \"-Wimplicit-fallthrough\"")                                       \
            CUBA_SWITCH(LAVA_CALL_##STEP, key)                                                                 \
            _Pragma("GCC diagnostic pop")                                                                      \
            if (vh) for (int64_t j = 0; j < len; j++) vh[o + j] = v[j];                                        \
            if (uh) for (int64_t j = 0; j < len; j++) uh[o + j] = u[j];                                        \
        }                                                                                                      \
    }                                                                                                          \
    free(u); free(v); free(x);                                                                                 \
}
#define LAVA_CALL_lava_fast(MU, MV, B) lava_fast(len, x, bb, sp, u, v, mu, mv, vth, MU, MV, B)
#define LAVA_CALL_lava_wide(MU, MV, B) lava_wide(len, x, bb, sp, u, v, mu, mv, vth, MU, MV, B)
LAVA_CUBA(int32_t, int32_t, lava_fast, lava_cuba_fast_a32)
LAVA_CUBA(int64_t, int32_t, lava_fast, lava_cuba_fast_a64)
LAVA_CUBA(int32_t, int64_t, lava_wide, lava_cuba_wide_a32)
LAVA_CUBA(int64_t, int64_t, lava_wide, lava_cuba_wide_a64)

/* ---- threads ---------------------------------------------------------------------------------------------- */
typedef void (*kernel_t)(job_t *);
typedef struct { kernel_t fn; job_t job; } task_t;

static void *run_task(void *p) { task_t *t = (task_t *)p; t->fn(&t->job); return NULL; }

#ifdef _OPENMP
/* Built against torch's own OpenMP runtime (toolchain/neurons/kernels/native/__init__.py): the blocks run on torch's worker
 * threads, which would otherwise spin for a while after each torch op and compete with threads of our own. */
#include <omp.h>
#endif

static int run_parallel(kernel_t fn, job_t *proto, int nthreads) {
    if (nthreads < 1) nthreads = 1;
    if (nthreads > proto->nblocks) nthreads = (int)(proto->nblocks > 0 ? proto->nblocks : 1);
    if (nthreads > 64) nthreads = 64;
    task_t tasks[64];
    for (int i = 0; i < nthreads; i++) {
        tasks[i].fn = fn; tasks[i].job = *proto; tasks[i].job.status = 0;
        tasks[i].job.b0 = proto->nblocks * i / nthreads; tasks[i].job.b1 = proto->nblocks * (i + 1) / nthreads;
    }
    int status = 0;
#ifdef _OPENMP
    if (nthreads > 1) {
#pragma omp parallel for num_threads(nthreads) schedule(static, 1)
        for (int i = 0; i < nthreads; i++) run_task(&tasks[i]);
    } else {
        run_task(&tasks[0]);
    }
#else
    pthread_t th[64]; int started[64] = {0};
    for (int i = 1; i < nthreads; i++) started[i] = pthread_create(&th[i], NULL, run_task, &tasks[i]) == 0;
    run_task(&tasks[0]);
    for (int i = 1; i < nthreads; i++) {
        if (started[i]) pthread_join(th[i], NULL);
        else run_task(&tasks[i]);
    }
#endif
    for (int i = 0; i < nthreads; i++) if (tasks[i].job.status) status = tasks[i].job.status;
    return status;
}

static int layout(job_t *a, int64_t T, int64_t n, int64_t W, int64_t C, int64_t k) {
    a->T = T; a->n = n; a->W = W; a->C = C; a->k = k;
    if (k > 1) {
        a->group = k * W * C;
        if (a->group <= 0 || n % a->group != 0 || W % k != 0) return -2;
    } else {
        a->k = 1; a->group = PLAIN_BLOCK;
    }
    a->nblocks = (n + a->group - 1) / a->group;
    return 0;
}

/* dtype: 0 float32, 1 float64. Returns 0, or < 0 on bad arguments / no memory. */
int snn_subtractive_forward(int dtype, int64_t T, int64_t n, int64_t W, int64_t C, int64_t k,
                            const void *cur, void *out, uint8_t *dts, void *x, void *v_final, void *dt_final,
                            const void *mask, int32_t *count, uint8_t *d_state, int carry, uint8_t *codes,
                            double theta, double c, int use_c, double leak, int nthreads) {
    job_t a; memset(&a, 0, sizeof a);
    if (layout(&a, T, n, W, C, k)) return -2;
    if (mask && a.k > 1) return -5;
    if (carry && !d_state) return -6;
    if (codes && a.k * a.k > 255) return -7;          /* a pooled count must fit its byte */
    a.mask = mask; a.count = count; a.d_state = d_state; a.carry = carry; a.codes = codes;
    a.cur = cur; a.out = out; a.dts = dts; a.x = x; a.v_final = v_final; a.dt_final = dt_final;
    a.theta = theta; a.c = c; a.use_c = use_c; a.leak = leak;
    return run_parallel(dtype ? forward_f64 : forward_f32, &a, nthreads);
}

int snn_subtractive_backward(int dtype, int64_t T, int64_t n, int64_t W, int64_t C, int64_t k,
                             int64_t t_lo, int64_t t_hi, int64_t t_base, const void *g_sp, const void *g_v,
                             const uint8_t *dts, const void *lut, const void *sg, const void *mask, void *grad,
                             const void *g_carry, double scale, double leak, int nthreads) {
    job_t a; memset(&a, 0, sizeof a);
    if (layout(&a, T, n, W, C, k)) return -2;
    if (mask && a.k > 1) return -5;
    a.mask = mask;
    if (t_lo < 0 || t_hi > T || t_lo >= t_hi || t_base < 0 || t_base > t_lo) return -4;
    if (t_hi < T && !g_carry && t_base > 0) return -4;  /* the carry would be read before the arrays' start */
    a.t_lo = t_lo; a.t_hi = t_hi; a.t_base = t_base; a.g_carry = g_carry;
    if (g_sp && !sg && (!dts || !lut)) return -3;
    a.g_sp = g_sp; a.g_v = g_v; a.dts_in = dts; a.lut = lut; a.sg = sg; a.grad = grad; a.scale = scale; a.leak = leak;
    return run_parallel(dtype ? backward_f64 : backward_f32, &a, nthreads);
}

int snn_cuba_forward(int dtype, int64_t T, int64_t n, const void *cur, const void *bias, void *out, uint8_t *flags,
                     uint8_t *dts, void *x, void *v_final, void *u_final, void *dt_final, double vth64,
                     int i_decay, int v_decay, int nthreads) {
    job_t a; memset(&a, 0, sizeof a);
    if (layout(&a, T, n, 1, 1, 1)) return -2;
    if (T < 1 || T > 254 || i_decay < 0 || v_decay < 0 || !(vth64 > 0)) return -4;
    a.cur = cur; a.bias = bias; a.out = out; a.flags = flags; a.dts = dts; a.x = x;
    a.v_final = v_final; a.u_final = u_final; a.dt_final = dt_final; a.theta = vth64;
    a.i_decay = i_decay; a.v_decay = v_decay;
    return run_parallel(dtype ? cuba_forward_f64 : cuba_forward_f32, &a, nthreads);
}

int snn_cuba_backward(int dtype, int64_t T, int64_t n, const void *g_sp, const void *g_v, const void *g_u,
                      const uint8_t *flags, const uint8_t *dts, const void *lut, const void *sg, void *grad,
                      void *g_bias, double vth64, int i_decay, int v_decay, int nthreads) {
    job_t a; memset(&a, 0, sizeof a);
    if (layout(&a, T, n, 1, 1, 1)) return -2;
    if (T < 1 || i_decay < 0 || v_decay < 0 || !(vth64 > 0) || !flags) return -4;
    if (g_sp && !sg && (!dts || !lut)) return -3;
    a.g_sp = g_sp; a.g_v = g_v; a.g_u = g_u; a.flags = (uint8_t *)flags; a.dts_in = dts; a.lut = lut; a.sg = sg;
    a.grad = grad; a.g_bias = g_bias; a.theta = vth64; a.i_decay = i_decay; a.v_decay = v_decay;
    return run_parallel(dtype ? cuba_backward_f64 : cuba_backward_f32, &a, nthreads);
}

/* ---- the emulator's sigma-delta neurons (hw_targets/simulators/sigma_delta.py) ---------------------------------- */
/* Lava's fixed-point Delta (mode 0), SigmaDelta (mode 1) and Sigma (mode 2) over a stream of T steps of n neurons,
 * int64 buffers (T, n), every Var an int32 (each sum wraps): sigma = sigma + a; act = max(sigma + bias, 0) (SigmaDelta)
 * or a << 12 (Delta); d = act - prev + r; m = d where |d| >= vth (np.abs(-2**31) stays negative: never); r = d - m;
 * the message m >> 6 (arithmetic), or sigma itself (Sigma). `state` gets sigma (modes 1, 2) or r (mode 0). */
static void sigma_delta_block(job_t *a) {
    const int64_t *in = (const int64_t *)a->cur, *bias = (const int64_t *)a->bias;
    int64_t *msg = (int64_t *)a->out, *state = (int64_t *)a->x;
    const int64_t vth = a->vth;
    const int mode = a->sd_mode;
    int64_t r[PLAIN_BLOCK], prev[PLAIN_BLOCK], sigma[PLAIN_BLOCK], b[PLAIN_BLOCK];
    for (int64_t blk = a->b0; blk < a->b1; blk++) {
        const int64_t j0 = blk * PLAIN_BLOCK, len = (a->n - j0 < PLAIN_BLOCK) ? a->n - j0 : PLAIN_BLOCK;
        for (int64_t j = 0; j < len; j++) { r[j] = 0; prev[j] = 0; sigma[j] = 0; b[j] = bias ? bias[j0 + j] : 0; }
        for (int64_t t = 0; t < a->T; t++) {
            const int64_t off = t * a->n + j0;
            for (int64_t j = 0; j < len; j++) {
                int64_t act;
                if (mode == 0) {
                    act = lava_wrap32((uint64_t)in[off + j] << 12);
                } else {
                    sigma[j] = lava_wrap32((uint64_t)(sigma[j] + in[off + j]));
                    if (mode == 2) { msg[off + j] = sigma[j]; state[off + j] = sigma[j]; continue; }
                    act = lava_wrap32((uint64_t)(sigma[j] + b[j]));
                    act = act > 0 ? act : 0;
                }
                const int64_t d = lava_wrap32((uint64_t)(act - prev[j] + r[j]));
                const int64_t ad = d < 0 ? -d : d;
                const int64_t m = (ad >= vth && d != INT32_MIN) ? d : 0;
                r[j] = d - m;
                msg[off + j] = m >> 6;
                state[off + j] = mode == 0 ? r[j] : sigma[j];
                prev[j] = act;
            }
        }
    }
}

int snn_sigma_delta(int64_t T, int64_t n, int mode, const int64_t *in, const int64_t *bias, int64_t vth,
                    int64_t *msg, int64_t *state, int nthreads) {
    if (T < 0 || n < 0 || mode < 0 || mode > 2) return -2;
    job_t a; memset(&a, 0, sizeof(a));
    a.T = T; a.n = n; a.group = PLAIN_BLOCK; a.nblocks = (n + PLAIN_BLOCK - 1) / PLAIN_BLOCK;
    a.cur = in; a.bias = bias; a.out = msg; a.x = state; a.vth = vth; a.sd_mode = mode;
    if (a.nblocks == 0) return 0;
    return run_parallel(sigma_delta_block, &a, nthreads);
}

/* The emulator's CUBA neuron (see its section): b samples of n neurons over T steps from zero state. fast: the
 * int32 version, only for decays in [0, 4096] and |vth| < 2^31 (`_fast_ok` in emulator.py asks for more). */
int snn_lava_cuba(int fast, int a_int64, int64_t b, int64_t T, int64_t n, const void *act, const int64_t *bias,
                  int64_t bias_stride, uint8_t *spikes, int64_t *v_hist, int64_t *u_hist, int64_t vth, int64_t du,
                  int64_t dv, int nthreads) {
    job_t a; memset(&a, 0, sizeof a);
    if (b < 0 || T < 0 || n < 0 || bias_stride < 0) return -2;
    if (fast && (du < 0 || du > 4096 || dv < 0 || dv > 4096 || vth < INT32_MIN || vth > INT32_MAX)) return -4;
    a.T = T; a.n = n; a.group = PLAIN_BLOCK;
    a.per_sample = (n + PLAIN_BLOCK - 1) / PLAIN_BLOCK;
    a.nblocks = b * a.per_sample;
    a.cur = act; a.bias = bias; a.bias_stride = bias_stride; a.out = spikes; a.v_hist = v_hist; a.u_hist = u_hist;
    a.vth = vth; a.du = du; a.dv = dv;
    kernel_t fn = fast ? (a_int64 ? lava_cuba_fast_a64 : lava_cuba_fast_a32)
                       : (a_int64 ? lava_cuba_wide_a64 : lava_cuba_wide_a32);
    return a.nblocks ? run_parallel(fn, &a, nthreads) : 0;
}
