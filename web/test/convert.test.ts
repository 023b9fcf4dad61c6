import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { Workflow } from '../src/api/types';
import { NodeCatalog } from '../src/model/catalog';
import { WorkflowFormatError, docToWorkflow, workflowToDoc } from '../src/model/convert';
import { connect, extractFragment, insertFragment, removeNodes, setValue } from '../src/model/graph';
import { catalog } from './fixtures';

const sample: Workflow = {
  format: 'latentloom.workflow',
  version: 1,
  nodes: {
    load: { type: 'LoadImage', inputs: { image: 'a.png' }, ui: { pos: [10, 20], title: 'Source' } },
    blur: { type: 'ImageBlur', inputs: { image: { node: 'load', output: 'image' }, radius: 3 }, mode: 'bypass', ui: { pos: [300, 20], color: '#123' } },
    save: {
      type: 'SaveImage',
      inputs: { images: { node: 'blur', output: 'image' }, filename_prefix: 'x', extra: { value: { a: 1, node: 'n', output: 'o' } } },
      ui: { pos: [600, 20], collapsed: true },
    },
    loop: {
      type: 'Denoise',
      inputs: { unet: { node: 'ghost', output: 'unet' }, steps: 4, list: [1, 2, 3] },
      body: {
        nodes: {
          in: { type: 'LoopInput', inputs: {}, ui: { pos: [0, 0] } },
          mid: { type: 'ImageBlur', inputs: { image: { node: 'load', output: 'image' }, radius: 2 }, ui: { pos: [100, 0] } },
          out: { type: 'LoopOutput', inputs: { latent: { node: 'in', output: 'latent' } }, ui: { pos: [300, 0] } },
        },
        ui: { note: 'body' },
      },
      ui: { pos: [0, 300] },
    },
  },
  settings: { fast: true },
  ui: { description: 'hello', groups: [{ id: 'g1', title: 'Inputs', rect: [0, 0, 200, 100] }] },
};

describe('workflow <-> graph conversion', () => {
  it('reads nodes, links, literals, bypass, titles and groups', () => {
    const doc = workflowToDoc(sample);
    const g = doc.root;
    expect(Object.keys(g.nodes).sort()).toEqual(['blur', 'load', 'loop', 'save']);
    expect(g.nodes.load.title).toBe('Source');
    expect(g.nodes.load.pos).toEqual([10, 20]);
    expect(g.nodes.blur.bypass).toBe(true);
    expect(g.nodes.blur.ui).toEqual({ color: '#123' });
    expect(g.nodes.save.collapsed).toBe(true);
    expect(g.edges.map((e) => e.id).sort()).toEqual(['blur:image->save:images', 'load:image->blur:image']);
    // a wrapped literal object is unwrapped in the model, never taken for a link
    expect(g.nodes.save.values.extra).toEqual({ a: 1, node: 'n', output: 'o' });
    expect(g.nodes.loop.values.list).toEqual([1, 2, 3]);
    // a link to a node that is not at this level is kept as an outer link
    expect(g.nodes.loop.outerLinks).toEqual({ unet: { node: 'ghost', output: 'unet' } });
    expect(g.groups).toEqual([{ id: 'g1', title: 'Inputs', rect: [0, 0, 200, 100] }]);
    expect(g.ui).toEqual({ description: 'hello' });
    expect(doc.settings).toEqual({ fast: true });
  });

  it('reads loop bodies, whose links may refer to the enclosing graph', () => {
    const body = workflowToDoc(sample).root.nodes.loop.body!;
    expect(Object.keys(body.nodes).sort()).toEqual(['in', 'mid', 'out']);
    expect(body.edges.map((e) => e.id)).toEqual(['in:latent->out:latent']);
    expect(body.nodes.mid.outerLinks).toEqual({ image: { node: 'load', output: 'image' } });
    expect(body.ui).toEqual({ note: 'body' });
  });

  it('round-trips a workflow exactly (loop bodies, bypass, wrapped objects, groups, settings)', () => {
    const back = docToWorkflow(workflowToDoc(sample));
    expect(back).toEqual(sample);
    expect(docToWorkflow(workflowToDoc(back))).toEqual(back);
  });

  it('writes a literal object wrapped, so the server never takes it for a link', () => {
    let doc = workflowToDoc(sample);
    doc = { ...doc, root: setValue(doc.root, 'load', 'image', { node: 'load', output: 'image' }) };
    const wf = docToWorkflow(doc);
    expect(wf.nodes.load.inputs!.image).toEqual({ value: { node: 'load', output: 'image' } });
  });

  it('keeps malformed inputs and unknown modes verbatim for validation to mark', () => {
    const raw = {
      format: 'latentloom.workflow', version: 1,
      nodes: { a: { type: 'Mystery', inputs: { bad: { foo: 1, bar: 2 } }, mode: 'muted', ui: { pos: [0, 0] } } },
      ui: {},
    };
    expect(docToWorkflow(workflowToDoc(raw))).toEqual(raw);
  });

  it('places nodes that have no position by their depth in the graph', () => {
    const doc = workflowToDoc({
      format: 'latentloom.workflow', version: 1,
      nodes: {
        a: { type: 'LoadImage', inputs: { image: 'a.png' } },
        b: { type: 'ImageBlur', inputs: { image: { node: 'a', output: 'image' } } },
        c: { type: 'ImageBlur', inputs: { image: { node: 'b', output: 'image' } } },
      },
    });
    const xs = ['a', 'b', 'c'].map((id) => doc.root.nodes[id].pos[0]);
    expect(xs[0]).toBeLessThan(xs[1]);
    expect(xs[1]).toBeLessThan(xs[2]);
    expect(docToWorkflow(doc).nodes.b.ui!.pos).toEqual(doc.root.nodes.b.pos);
  });

  it('refuses what is not a workflow of ours', () => {
    expect(() => workflowToDoc([])).toThrow(WorkflowFormatError);
    expect(() => workflowToDoc({ format: 'other', nodes: {} })).toThrow(/format/);
    expect(() => workflowToDoc({ format: 'latentloom.workflow', version: 1, nodes: [] })).toThrow(/nodes/);
  });

  it('round-trips the shipped workflows', () => {
    for (const f of ['image-basics.json']) {
      const wf = JSON.parse(readFileSync(new URL(`../../workflows/${f}`, import.meta.url), 'utf8'));
      const back = docToWorkflow(workflowToDoc(wf));
      expect(back.nodes).toEqual(
        Object.fromEntries(Object.entries(wf.nodes as Record<string, { ui?: object }>).map(([k, v]) => [k, { ...v, ui: { ...v.ui } }])),
      );
    }
  });
});

describe('graph edits', () => {
  it('an input takes one link: connecting again replaces it', () => {
    let g = workflowToDoc(sample).root;
    g = connect(g, 'load', 'image', 'save', 'images');
    expect(g.edges.filter((e) => e.target === 'save' && e.input === 'images').map((e) => e.source)).toEqual(['load']);
  });

  it('removing nodes removes their links', () => {
    const g = removeNodes(workflowToDoc(sample).root, ['blur']);
    expect(g.edges).toEqual([]);
    expect(g.nodes.blur).toBeUndefined();
  });

  it('copy/paste gives fresh ids and keeps the links inside the selection only', () => {
    const g = workflowToDoc(sample).root;
    const frag = extractFragment(g, ['blur', 'save']);
    expect(frag.edges.map((e) => e.id)).toEqual(['blur:image->save:images']);
    const r = insertFragment(g, JSON.parse(JSON.stringify(frag)), { at: [1000, 1000] });
    expect(r.ids).toHaveLength(2);
    expect(r.ids.every((id) => !g.nodes[id])).toBe(true);
    const [nb, ns] = r.ids;
    expect(r.graph.nodes[nb].pos).toEqual([1000, 1000]);
    expect(r.graph.nodes[ns].pos).toEqual([1300, 1000]);
    expect(r.graph.edges.some((e) => e.source === nb && e.target === ns)).toBe(true);
    expect(r.graph.nodes[nb].bypass).toBe(true);
  });
});

describe('catalog', () => {
  const c = new NodeCatalog(catalog);

  it('searches by name, category, alias and socket type', () => {
    expect(c.search('blur').map((s) => s.name)).toEqual(['ImageBlur']);
    expect(c.search('sampling').map((s) => s.name)).toEqual(['Denoise']);
    expect(c.search('in:LATENT').map((s) => s.name)).toEqual(['Denoise']);
    expect(c.search('out:MASK').map((s) => s.name)).toEqual(['LoadImage']);
    expect(c.search('in:IMAGE').map((s) => s.name).sort()).toEqual(['ImageBlur', 'SaveImage']);
    expect(c.resolve('Blur')?.name).toBe('ImageBlur');
  });

  it('makes new nodes with default widget values and a loop default body', () => {
    const n = c.newNode('Denoise', 'd', [0, 0]);
    expect(n.values).toEqual({ steps: 20 });
    expect(Object.keys(n.body!.nodes).sort()).toEqual(['in', 'out']);
    expect(c.newNode('LoadImage', 'l', [0, 0]).values).toEqual({ image: 'a.png' });
    expect(c.newNode('Seed', 's', [0, 0]).ui.seed_control).toEqual({ seed: 'fixed' });
  });

  it('gives LoopInput / LoopOutput their sockets from the owning loop', () => {
    expect(c.schemaFor('LoopInput', 'Denoise')!.outputs.map((o) => o.name)).toEqual(['latent', 'step']);
    expect(c.schemaFor('LoopOutput', 'Denoise')!.inputs.map((i) => i.name)).toEqual(['latent']);
    expect(c.schemaFor('LoopInput', null)).toBeUndefined();
  });
});
