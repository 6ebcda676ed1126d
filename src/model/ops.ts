/**
 * Transformer ops laid out for the fast path of the backend: every matmul is a plain 2-D
 * (M,K)@(K,N) product. tfjs' own matMul gradient uses transposeA/transposeB, which are far
 * slower on wasm, so gradients here transpose explicitly (cheap) and then multiply plainly.
 */
import * as tf from '@tensorflow/tfjs';

type Grad2 = (a: tf.Tensor2D, b: tf.Tensor2D) => tf.Tensor2D;

type GradFunc = (dy: tf.Tensor2D, saved: tf.Tensor[]) => tf.Tensor | tf.Tensor[];

/**
 * A customGrad gradient that frees its temporaries on return. tfjs calls gradFunc outside any
 * tidy, so everything it makes but does not return would otherwise live until the whole backward
 * pass ends (the gelu and attention temporaries of every block at once).
 */
function tidied(g: GradFunc): GradFunc {
  return (dy, saved) => tf.tidy(() => g(dy, saved));
}

/**
 * x^T @ dy for x (N, din), dy (N, dout), with the transpose on the narrower operand: wasm's
 * transpose is slow on wide tensors, so for din > dout (e.g. the side network's down
 * projections) it is (dy^T @ x)^T, which transposes the narrow dy and the small result instead.
 */
function weightGrad(x: tf.Tensor2D, dy: tf.Tensor2D): tf.Tensor2D {
  return x.shape[1] > dy.shape[1] ? (tf.transpose(tf.matMul(tf.transpose(dy), x)) as tf.Tensor2D) : tf.matMul(tf.transpose(x), dy);
}

/** a (M,K) @ b (K,N) -> (M,N); both inputs get gradients: da = dy @ b^T, db = a^T @ dy. */
export const matmul: Grad2 = tf.customGrad(((a: tf.Tensor2D, b: tf.Tensor2D, save: tf.GradSaveFunc) => {
  save([a, b]);
  return {
    value: tf.matMul(a, b),
    gradFunc: tidied((dy, saved) => {
      const [sa, sb] = saved as [tf.Tensor2D, tf.Tensor2D];
      return [tf.matMul(dy, tf.transpose(sb)), weightGrad(sa, dy)];
    }),
  };
}) as unknown as Parameters<typeof tf.customGrad>[0]) as unknown as Grad2;

const onesRows = new Map<number, tf.Tensor2D>();

/**
 * Column sums of x (N, d) -> (d), as ones(1, N) @ x: wasm's reduction over axis 0 is much
 * slower than this tiny matmul (it transposes first). The ones row is kept per N for the process.
 */
export function sumRows(x: tf.Tensor2D): tf.Tensor1D {
  const n = x.shape[0];
  let ones = onesRows.get(n);
  if (!ones) {
    ones = tf.keep(tf.ones([1, n])) as tf.Tensor2D;
    onesRows.set(n, ones);
  }
  return tf.reshape(tf.matMul(ones, x), [x.shape[1]]) as tf.Tensor1D;
}

type Grad3 = (x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D) => tf.Tensor2D;

/** x @ w + b with the bias folded into the matmul, saving a separate add pass over the output. */
const matmulBias: Grad3 = tf.customGrad(((x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D, save: tf.GradSaveFunc) => {
  save([x, w]);
  return {
    value: tf.fused.matMul({ a: x, b: w, bias: b }), // (N, dout)
    gradFunc: tidied((dy, saved) => {
      const [sx, sw] = saved as [tf.Tensor2D, tf.Tensor2D];
      return [tf.matMul(dy, tf.transpose(sw)), weightGrad(sx, dy), sumRows(dy)];
    }),
  };
}) as unknown as Parameters<typeof tf.customGrad>[0]) as unknown as Grad3;

/** x (N,din) @ w (din,dout) + b (dout) -> (N,dout); x, w and b all get gradients. */
export function linear(x: tf.Tensor2D, w: tf.Tensor2D, b?: tf.Tensor1D): tf.Tensor2D {
  return b ? matmulBias(x, w, b) : matmul(x, w);
}

/**
 * The same product with w and b frozen: only x gets a gradient (dx = dy @ w^T), so no dW is
 * ever computed. w and b are closed over, never recorded on the gradient tape (w is saved, so
 * it may be a temporary of the caller's tidy).
 */
export function frozenLinear(x: tf.Tensor2D, w: tf.Tensor2D, b?: tf.Tensor1D): tf.Tensor2D {
  const f = tf.customGrad(((xi: tf.Tensor2D, save: tf.GradSaveFunc) => {
    save([w]); // keeps w alive for backward even when the caller's tidy disposes it
    return {
      value: tf.fused.matMul({ a: xi, b: w, bias: b }), // (N, dout)
      gradFunc: tidied((dy, saved) => tf.matMul(dy, tf.transpose(saved[0] as tf.Tensor2D))), // (N, din)
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]) as unknown as (x: tf.Tensor2D) => tf.Tensor2D;
  return f(x);
}

type Norm3 = (x: tf.Tensor2D, gamma: tf.Tensor1D, beta: tf.Tensor1D) => tf.Tensor2D;

const layerNorms = new Map<number, Norm3>();

/**
 * LayerNorm with a hand-written gradient: it saves x-hat and 1/std only (tfjs' own gradient
 * through mean/sub/square/rsqrt/mul saved five (N, d) tensors and ran a kernel per op backward).
 * dx = rstd (g - mean(g) - x-hat mean(g x-hat)) with g = dy gamma; dgamma = sum(dy x-hat); dbeta = sum(dy).
 */
function layerNormOp(eps: number): Norm3 {
  let f = layerNorms.get(eps);
  if (!f) {
    f = tf.customGrad(((x: tf.Tensor2D, gamma: tf.Tensor1D, beta: tf.Tensor1D, save: tf.GradSaveFunc) => {
      const { y, xhat, rstd } = tf.tidy(() => {
        const xc = tf.sub(x, tf.mean(x, -1, true)); // (N, d)
        const r = tf.rsqrt(tf.add(tf.mean(tf.square(xc), -1, true), eps)); // (N, 1)
        const xh = tf.mul(xc, r); // (N, d)
        return { y: tf.add(tf.mul(xh, gamma), beta), xhat: xh, rstd: r };
      });
      save([xhat, rstd, gamma]);
      return {
        value: y,
        gradFunc: tidied((dy, saved) => {
          const [xh, r, g] = saved as [tf.Tensor2D, tf.Tensor2D, tf.Tensor1D];
          const gx = tf.mul(dy, g); // (N, d)
          const dx = tf.mul(tf.sub(tf.sub(gx, tf.mean(gx, -1, true)), tf.mul(xh, tf.mean(tf.mul(gx, xh), -1, true))), r);
          return [dx, sumRows(tf.mul(dy, xh) as tf.Tensor2D), sumRows(dy)];
        }),
      };
    }) as unknown as Parameters<typeof tf.customGrad>[0]) as unknown as Norm3;
    layerNorms.set(eps, f);
  }
  return f;
}

/**
 * x @ w where only w trains (x is data, such as cached backbone activations): dW = x^T @ dy and
 * no dx is ever computed. x is closed over and saved, never recorded on the tape.
 */
export function inputFrozenLinear(x: tf.Tensor2D, w: tf.Tensor2D): tf.Tensor2D {
  const f = tf.customGrad(((wi: tf.Tensor2D, save: tf.GradSaveFunc) => {
    save([x]);
    return {
      value: tf.matMul(x, wi), // (N, dout)
      gradFunc: tidied((dy, saved) => weightGrad(saved[0] as tf.Tensor2D, dy)), // (din, dout)
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]) as unknown as (w: tf.Tensor2D) => tf.Tensor2D;
  return f(w);
}

/** LayerNorm over the last axis: (N,d) -> (N,d). */
export function layerNorm(x: tf.Tensor2D, gamma: tf.Tensor1D, beta: tf.Tensor1D, eps: number): tf.Tensor2D {
  return layerNormOp(eps)(x, gamma, beta);
}

/** RMSNorm (Llama): x / sqrt(mean(x^2) + eps) * gamma, (N,d) -> (N,d). */
export function rmsNorm(x: tf.Tensor2D, gamma: tf.Tensor1D, eps: number): tf.Tensor2D {
  return tf.tidy(() => {
    const ms = tf.mean(tf.square(x), -1, true); // (N, 1)
    return tf.mul(tf.mul(x, tf.rsqrt(tf.add(ms, eps))), gamma) as tf.Tensor2D;
  });
}

const geluC = Math.sqrt(2 / Math.PI);

type Unary = (x: tf.Tensor2D) => tf.Tensor2D;

/**
 * GPT-2's tanh-approximated GELU ("gelu_new"), computed as x * sigmoid(2z) with
 * z = sqrt(2/pi) (x + 0.044715 x^3): identical to 0.5 x (1 + tanh z), and wasm's tanh is much
 * slower than its sigmoid. Hand-written gradient, saving x and s = sigmoid(2z) only:
 * dy/dx = s + x s (1 - s) (2z)', (2z)' = 2 sqrt(2/pi) (1 + 3 * 0.044715 x^2).
 */
export const geluNew: Unary = tf.customGrad(((x: tf.Tensor2D, save: tf.GradSaveFunc) => {
  const { y, s } = tf.tidy(() => {
    const sg = tf.sigmoid(tf.mul(tf.add(tf.mul(tf.square(x), 2 * geluC * 0.044715), 2 * geluC), x)); // sigmoid(2z), (N, f)
    return { y: tf.mul(x, sg), s: sg };
  });
  save([x, s]);
  return {
    value: y,
    gradFunc: tidied((dy, saved) => {
      const [sx, ss] = saved as [tf.Tensor2D, tf.Tensor2D];
      const dz = tf.add(tf.mul(tf.square(sx), 2 * geluC * 3 * 0.044715), 2 * geluC); // (2z)'
      return tf.mul(dy, tf.add(ss, tf.mul(tf.mul(sx, tf.mul(ss, tf.sub(1, ss))), dz)));
    }),
  };
}) as unknown as Parameters<typeof tf.customGrad>[0]) as unknown as Unary;

/** SiLU (swish): x * sigmoid(x). */
export function silu(x: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => tf.mul(x, tf.sigmoid(x)) as tf.Tensor2D);
}

const maskCache = new Map<number, tf.Tensor2D>();

/** Additive causal mask (T,T): 0 on and below the diagonal, -1e9 above. Kept for the process. */
function causalMask(T: number): tf.Tensor2D {
  let m = maskCache.get(T);
  if (!m) {
    const v = new Float32Array(T * T);
    for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) v[i * T + j] = -1e9;
    m = tf.keep(tf.tensor2d(v, [T, T]));
    maskCache.set(T, m);
  }
  return m;
}

const ropeCache = new Map<string, [tf.Tensor, tf.Tensor]>();

/**
 * cos and sin tables (1,T,1,hd) in Hugging Face's convention: inv_freq_i = theta^(-2i/hd),
 * angles = pos * inv_freq (T, hd/2), duplicated to (T, hd) as concat(angles, angles).
 */
export function rotaryTables(T: number, headDim: number, theta: number): [tf.Tensor, tf.Tensor] {
  const key = `${T}/${headDim}/${theta}`;
  let t = ropeCache.get(key);
  if (!t) {
    const half = headDim / 2;
    const cos = new Float32Array(T * headDim),
      sin = new Float32Array(T * headDim);
    for (let p = 0; p < T; p++) {
      for (let i = 0; i < half; i++) {
        const invFreq = 1 / theta ** ((2 * i) / headDim);
        const a = p * invFreq;
        cos[p * headDim + i] = cos[p * headDim + half + i] = Math.cos(a);
        sin[p * headDim + i] = sin[p * headDim + half + i] = Math.sin(a);
      }
    }
    t = [tf.keep(tf.tensor4d(cos, [1, T, 1, headDim])), tf.keep(tf.tensor4d(sin, [1, T, 1, headDim]))];
    ropeCache.set(key, t);
  }
  return t;
}

/**
 * Rotary position embedding, HF convention: x*cos + rotate_half(x)*sin with
 * rotate_half(x) = concat(-x[hd/2:], x[:hd/2]). x: (B*T, H*hd) -> (B*T, H*hd); positions 0..T-1.
 */
export function applyRotary(x: tf.Tensor2D, seqLen: number, nHeads: number, headDim: number, theta: number): tf.Tensor2D {
  return tf.tidy(() => {
    const [cos, sin] = rotaryTables(seqLen, headDim, theta);
    const batch = x.shape[0] / seqLen;
    const half = headDim / 2;
    const x4 = tf.reshape(x, [batch, seqLen, nHeads, headDim]); // (B, T, H, hd)
    const x1 = tf.slice(x4, [0, 0, 0, 0], [-1, -1, -1, half]);
    const x2 = tf.slice(x4, [0, 0, 0, half], [-1, -1, -1, half]);
    const rotated = tf.concat([tf.neg(x2), x1], 3); // (B, T, H, hd)
    const y = tf.add(tf.mul(x4, cos), tf.mul(rotated, sin));
    return tf.reshape(y, x.shape) as tf.Tensor2D;
  });
}

/** Rows b*T..(b+1)*T of x (B*T, w) for each b: B pieces (T, w), contiguous copies. */
function rowBlocks(x: tf.Tensor2D, T: number): tf.Tensor2D[] {
  const n = x.shape[0] / T;
  return n === 1 ? [x] : (tf.unstack(tf.reshape(x, [n, T, x.shape[1]])) as tf.Tensor2D[]);
}

/** x (B*T, H*hd) -> B*H pieces (T, hd), piece b*H + h holding head h of sequence b. */
function headsRows(x: tf.Tensor2D, B: number, T: number, H: number, hd: number): tf.Tensor2D[] {
  if (H === 1) return rowBlocks(x, T);
  return rowBlocks(tf.reshape(tf.transpose(tf.reshape(x, [B, T, H, hd]), [0, 2, 1, 3]), [B * H * T, hd]) as tf.Tensor2D, T);
}

/** x (B*T, H*hd) -> B*H pieces (hd, T): the transposed heads, for plain matmuls against them. */
function headsCols(x: tf.Tensor2D, B: number, T: number, H: number, hd: number): tf.Tensor2D[] {
  return rowBlocks(tf.reshape(tf.transpose(tf.reshape(x, [B, T, H, hd]), [0, 2, 3, 1]), [B * H * hd, T]) as tf.Tensor2D, hd);
}

/** B*H pieces (T, hd) -> (B*T, H*hd), the inverse of headsRows. */
function mergeHeads(pieces: tf.Tensor[], B: number, T: number, H: number, hd: number): tf.Tensor2D {
  const rows = pieces.length === 1 ? pieces[0]! : tf.concat(pieces, 0); // (B*H*T, hd)
  if (H === 1) return rows as tf.Tensor2D;
  return tf.reshape(tf.transpose(tf.reshape(rows, [B, H, T, hd]), [0, 2, 1, 3]), [B * T, H * hd]) as tf.Tensor2D;
}

/** The (B*H, T, T) stack of (T, T) pieces, transposed piecewise, as B*H pieces. */
function transposedBlocks(x: tf.Tensor2D, T: number): tf.Tensor2D[] {
  const n = x.shape[0] / T;
  return rowBlocks(tf.reshape(tf.transpose(tf.reshape(x, [n, T, T]), [0, 2, 1]), [n * T, T]) as tf.Tensor2D, T);
}

type Attention = (q: tf.Tensor2D, k: tf.Tensor2D, v: tf.Tensor2D) => tf.Tensor2D;
const attentions = new Map<string, Attention>();

/**
 * Causal multi-head attention with grouped-query heads, as a loop of per-head plain 2-D matmuls
 * (wasm's batched rank-3 matmuls are far slower), with a hand-written gradient: it saves the
 * probabilities P and q, k, v, and backward is four plain matmuls per head around one softmax
 * gradient over all heads at once (tfjs' own gradient of the same graph runs many more kernels:
 * transposes inside every matmul gradient, pack/unpack pairs, a generic softmax gradient).
 * q: (B*T, H*hd); k, v: (B*T, Hkv*hd); query head h reads key/value head floor(h / (H/Hkv)).
 * Returns (B*T, H*hd).
 */
export function causalAttention(
  q: tf.Tensor2D,
  k: tf.Tensor2D,
  v: tf.Tensor2D,
  seqLen: number,
  nHeads: number,
  nKvHeads: number,
  headDim: number,
): tf.Tensor2D {
  const key = `${seqLen}/${nHeads}/${nKvHeads}/${headDim}`;
  let f = attentions.get(key);
  if (!f) {
    f = attentionOp(seqLen, nHeads, nKvHeads, headDim);
    attentions.set(key, f);
  }
  return f(q, k, v);
}

function attentionOp(T: number, H: number, Hkv: number, hd: number): Attention {
  const group = H / Hkv,
    c = 1 / Math.sqrt(hd);
  return tf.customGrad(((q: tf.Tensor2D, k: tf.Tensor2D, v: tf.Tensor2D, save: tf.GradSaveFunc) => {
    const B = q.shape[0] / T;
    const kv = (i: number) => Math.floor(i / H) * Hkv + Math.floor((i % H) / group); // key/value piece of query piece i
    const { out, p } = tf.tidy(() => {
      const qs = headsRows(q, B, T, H, hd),
        kts = headsCols(k, B, T, Hkv, hd),
        vs = headsRows(v, B, T, Hkv, hd);
      const scores = tf.concat(
        qs.map((qi, i) => tf.matMul(qi, kts[kv(i)]!)),
        0,
      ); // (B*H*T, T)
      const probs = tf.reshape(tf.softmax(tf.add(tf.reshape(tf.mul(scores, c), [B * H, T, T]), causalMask(T))), [
        B * H * T,
        T,
      ]) as tf.Tensor2D;
      const o = mergeHeads(
        rowBlocks(probs, T).map((pi, i) => tf.matMul(pi, vs[kv(i)]!)),
        B,
        T,
        H,
        hd,
      ); // (B*T, H*hd)
      return { out: o, p: probs };
    });
    save([q, k, v, p]);
    return {
      value: out,
      gradFunc: tidied((dy, saved) => {
        const [sq, sk, sv, sp] = saved as [tf.Tensor2D, tf.Tensor2D, tf.Tensor2D, tf.Tensor2D];
        const dos = headsRows(dy, B, T, H, hd),
          vts = headsCols(sv, B, T, Hkv, hd);
        const dp = tf.concat(
          dos.map((d, i) => tf.matMul(d, vts[kv(i)]!)),
          0,
        ); // (B*H*T, T)
        // Softmax gradient, scaled by c: dS = c P (dP - rowsum(dP P)).
        const ds = tf.mul(sp, tf.mul(tf.sub(dp, tf.sum(tf.mul(dp, sp), 1, true)), c)) as tf.Tensor2D; // (B*H*T, T)
        const qs = headsRows(sq, B, T, H, hd),
          ks = headsRows(sk, B, T, Hkv, hd);
        const dq = mergeHeads(
          rowBlocks(ds, T).map((d, i) => tf.matMul(d, ks[kv(i)]!)),
          B,
          T,
          H,
          hd,
        );
        const dsT = transposedBlocks(ds, T),
          pT = transposedBlocks(sp, T);
        // A key/value head sums the contributions of the query heads in its group.
        const perKv = (term: (i: number) => tf.Tensor2D) =>
          Array.from({ length: B * Hkv }, (_, j) => {
            const b = Math.floor(j / Hkv),
              first = b * H + (j % Hkv) * group;
            const parts = Array.from({ length: group }, (_, g) => term(first + g));
            return parts.length === 1 ? parts[0]! : tf.addN(parts);
          });
        const dk = mergeHeads(
          perKv((i) => tf.matMul(dsT[i]!, qs[i]!)),
          B,
          T,
          Hkv,
          hd,
        );
        const dv = mergeHeads(
          perKv((i) => tf.matMul(pT[i]!, dos[i]!)),
          B,
          T,
          Hkv,
          hd,
        );
        return [dq, dk, dv];
      }),
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]) as unknown as Attention;
}
