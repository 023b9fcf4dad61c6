import { deflateSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { NodeCatalog } from '../src/model/catalog';
import { importJson, importPngText } from '../src/model/importer';
import { readPngText } from '../src/model/png';
import { applyRunEvent, errorsAt, initialRunState } from '../src/state/runs';
import { catalog } from './fixtures';

const c = new NodeCatalog(catalog);

function crc32(buf: Uint8Array): number {
  let crc = ~0;
  for (const b of buf) {
    crc ^= b;
    for (let k = 0; k < 8; k++) crc = (crc >>> 1) ^ (0xedb88320 & -(crc & 1));
  }
  return ~crc >>> 0;
}

function chunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, data.length);
  out.set(new TextEncoder().encode(type), 4);
  out.set(data, 8);
  dv.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

function png(chunks: Uint8Array[]): Uint8Array {
  const sig = new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]);
  const parts = [sig, ...chunks, chunk('IEND', new Uint8Array())];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

const enc = (s: string) => new TextEncoder().encode(s);
const cat = (...a: Uint8Array[]) => {
  const out = new Uint8Array(a.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of a) {
    out.set(p, o);
    o += p.length;
  }
  return out;
};

const ours = { format: 'latentloom.workflow', version: 1, nodes: { a: { type: 'LoadImage', inputs: { image: 'a.png' } } } };

describe('PNG text chunks', () => {
  it('reads tEXt, zTXt and iTXt (plain and compressed)', async () => {
    const bytes = png([
      chunk('tEXt', cat(enc('workflow'), new Uint8Array([0]), enc(JSON.stringify(ours)))),
      chunk('zTXt', cat(enc('z'), new Uint8Array([0, 0]), new Uint8Array(deflateSync(Buffer.from('zipped'))))),
      chunk('iTXt', cat(enc('i'), new Uint8Array([0, 0, 0]), enc('en'), new Uint8Array([0]), new Uint8Array([0]), enc('ünïcode'))),
      chunk('iTXt', cat(enc('iz'), new Uint8Array([0, 1, 0, 0, 0]), new Uint8Array(deflateSync(Buffer.from('packed ✓'))))),
    ]);
    const t = await readPngText(bytes);
    expect(JSON.parse(t.workflow)).toEqual(ours);
    expect(t.z).toBe('zipped');
    expect(t.i).toBe('ünïcode');
    expect(t.iz).toBe('packed ✓');
  });

  it('refuses a file that is not a PNG', async () => {
    await expect(readPngText(enc('GIF89a'))).rejects.toThrow(/not a PNG/);
  });

  it('prefers our workflow chunk, then ComfyUI prompt with LiteGraph positions', () => {
    expect(importPngText({ workflow: JSON.stringify(ours), prompt: '{}' }, c).workflow).toEqual(ours);
    const prompt = { '3': { class_type: 'LoadImage', inputs: { image: 'a.png' } }, '4': { class_type: 'Blur', inputs: { image: ['3', 0], radius: 5 } } };
    const lg = { nodes: [{ id: 3, type: 'LoadImage', pos: [11, 22] }, { id: 4, type: 'Blur', pos: [33, 44] }], links: [] };
    const r = importPngText({ workflow: JSON.stringify(lg), prompt: JSON.stringify(prompt) }, c);
    expect(r.origin).toBe('comfyui-api');
    expect(r.workflow.nodes['4']).toEqual({
      type: 'ImageBlur', inputs: { image: { node: '3', output: 'image' }, radius: 5 }, ui: { comfy_class: 'Blur', pos: [33, 44] },
    });
    expect(r.workflow.nodes['3'].ui!.pos).toEqual([11, 22]);
    expect(r.prompt).toEqual(prompt); // kept for the server's exact translation
    expect(() => importPngText({}, c)).toThrow(/no workflow/);
  });
});

describe('ComfyUI import', () => {
  it('translates an API prompt: output indices to names, unknown classes kept and reported', () => {
    const r = importJson({ '1': { class_type: 'LoadImage', inputs: { image: 'a.png' } }, '2': { class_type: 'KSampler', inputs: { x: ['1', 1], cfg: { a: 1 } } } }, c);
    expect(r.workflow.nodes['2'].inputs).toEqual({ x: { node: '1', output: 'mask' }, cfg: { value: { a: 1 } } });
    expect(r.workflow.nodes['2'].type).toBe('KSampler');
    expect(r.warnings.join(' ')).toMatch(/KSampler/);
  });

  it('translates a LiteGraph workflow: links and widget values in order, seed control skipped, bypass', () => {
    const lg = {
      nodes: [
        { id: 1, type: 'Seed', pos: [0, 0], widgets_values: [42, 'randomize'], outputs: [{ name: 'seed', links: [] }] },
        { id: 2, type: 'LoadImage', pos: [0, 100], widgets_values: ['b.png', 'image'] },
        { id: 3, type: 'ImageBlur', pos: [200, 100], mode: 4, inputs: [{ name: 'image', link: 7 }], widgets_values: [9] },
      ],
      links: [[7, 2, 0, 3, 0, 'IMAGE']],
    };
    const r = importJson(lg, c);
    expect(r.origin).toBe('comfyui');
    expect(r.workflow.nodes['1'].inputs).toEqual({ seed: 42 });
    expect(r.workflow.nodes['2'].inputs).toEqual({ image: 'b.png' });
    expect(r.workflow.nodes['3']).toMatchObject({ mode: 'bypass', inputs: { image: { node: '2', output: 'image' }, radius: 9 } });
    expect(r.litegraph).toBe(lg); // kept for the server's exact translation
    // a ComfyUI PNG with only the editor's workflow chunk goes the same way
    const p = importPngText({ workflow: JSON.stringify(lg) }, c);
    expect(p.origin).toBe('comfyui');
    expect(p.litegraph).toEqual(lg);
  });

  it('refuses JSON that is no workflow', () => {
    expect(() => importJson({ hello: 1 }, c)).toThrow(/neither/);
    expect(() => importJson({ format: 'x' }, c)).toThrow(/not a Latent Loom/);
  });
});

describe('run events', () => {
  const mine = (id: string) => id === 'r1';
  it('tracks queued, cached, running, progress, executed and images', () => {
    let s = initialRunState();
    s = applyRunEvent(s, { type: 'run_started', data: { run_id: 'r1', nodes: ['a', 'b', 'c'] } }, mine);
    expect(s.phase).toBe('running');
    expect(s.nodes.a.status).toBe('queued');
    s = applyRunEvent(s, { type: 'nodes_cached', data: { run_id: 'r1', nodes: ['a'] } }, mine);
    s = applyRunEvent(s, { type: 'node_started', data: { run_id: 'r1', node_id: 'b', node_type: 'X' } }, mine);
    s = applyRunEvent(s, { type: 'node_progress', data: { run_id: 'r1', node_id: 'b', value: 0, max: 4, text: 'compiling UNet for 64x64 batch 1' } }, mine);
    expect(s.nodes.b).toMatchObject({ status: 'running', statusText: 'compiling UNet for 64x64 batch 1' });
    s = applyRunEvent(s, { type: 'node_progress', data: { run_id: 'r1', node_id: 'b', value: 2, max: 4 } }, mine);
    expect(s.nodes.b).toMatchObject({ status: 'running', progress: { value: 2, max: 4 } });
    expect(s.nodes.b.statusText).toBeUndefined(); // the compile is over once steps progress
    s = applyRunEvent(s, { type: 'preview', data: { run_id: 'r1', node_id: 'b', image: 'data:x' } }, mine);
    expect(s.nodes.b.preview).toBe('data:x');
    s = applyRunEvent(s, { type: 'node_finished', data: { run_id: 'r1', node_id: 'b', seconds: 0.5, cached: false, ui: { images: [{ filename: 'f.png', subfolder: '', type: 'output' }] } } }, mine);
    expect(s.nodes.b).toMatchObject({ status: 'executed', seconds: 0.5, runId: 'r1' });
    expect(s.nodes.b.images).toHaveLength(1);
    s = applyRunEvent(s, { type: 'run_finished', data: { run_id: 'r1', seconds: 1 } }, mine);
    expect(s.phase).toBe('success');
    expect(s.nodes.a.status).toBe('cached');
    expect(s.nodes.c).toBeUndefined();
  });

  it('ignores other clients\' runs', () => {
    const s = initialRunState();
    expect(applyRunEvent(s, { type: 'run_started', data: { run_id: 'other', nodes: ['a'] } }, mine)).toBe(s);
  });

  it('marks the failing node, and validation errors by node and input (loop bodies by prefix)', () => {
    let s = applyRunEvent(initialRunState(), { type: 'run_started', data: { run_id: 'r1', nodes: ['a'] } }, mine);
    s = applyRunEvent(s, { type: 'run_failed', data: { run_id: 'r1', node_id: 'a', node_type: 'X', error_type: 'NodeError', message: 'boom', errors: [] } }, mine);
    expect(s.phase).toBe('error');
    expect(s.nodes.a).toMatchObject({ status: 'error', error: 'boom' });
    const errs = [
      { node_id: 'a', input: 'x', code: 'type_mismatch', message: 'm1' },
      { node_id: 'loop/inner', input: 'y', code: 'missing_input', message: 'm2' },
    ];
    expect(Object.keys(errorsAt(errs, []))).toEqual(['a', 'loop']);
    expect(errorsAt(errs, ['loop'])).toEqual({ inner: [errs[1]] });
  });
});
