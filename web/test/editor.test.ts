// The editor's command layer: every edit is one undo step (typing and dragging fold into one).
import { beforeEach, describe, expect, it } from 'vitest';
import { NodeCatalog } from '../src/model/catalog';
import { Editor } from '../src/state/editor';
import { catalog } from './fixtures';

let ed: Editor;
beforeEach(() => {
  ed = new Editor();
  ed.store.set({ catalog: new NodeCatalog(catalog), catalogStatus: 'ready' });
  ed.toast = () => undefined;
});

describe('editor commands and undo', () => {
  it('adds, connects, edits and undoes each step', () => {
    const a = ed.addNode('LoadImage', [0, 0])!;
    const b = ed.addNode('ImageBlur', [300, 0])!;
    ed.connect(a, 'image', b, 'image');
    expect(ed.graph.edges).toHaveLength(1);
    ed.doUndo();
    expect(ed.graph.edges).toHaveLength(0);
    ed.doUndo();
    expect(ed.graph.nodes[b]).toBeUndefined();
    ed.doRedo();
    ed.doRedo();
    expect(ed.graph.edges).toHaveLength(1);
    expect(ed.s.canRedo).toBe(false);
  });

  it('folds typing in one widget into one undo step', () => {
    const b = ed.addNode('ImageBlur', [0, 0])!;
    for (const v of [3, 4, 5, 6]) ed.setValue(b, 'radius', v);
    expect(ed.graph.nodes[b].values.radius).toBe(6);
    ed.doUndo();
    expect(ed.graph.nodes[b].values.radius).toBe(2);
  });

  it('a drag gesture is one undo step', () => {
    const b = ed.addNode('ImageBlur', [0, 0])!;
    ed.beginGesture();
    for (let x = 1; x <= 10; x++) ed.moveLive({ [b]: [x * 10, 0] });
    ed.endGesture('Move');
    expect(ed.graph.nodes[b].pos).toEqual([100, 0]);
    ed.doUndo();
    expect(ed.graph.nodes[b].pos).toEqual([0, 0]);
  });

  it('duplicates, deletes, bypasses and groups the selection', () => {
    const a = ed.addNode('LoadImage', [0, 0])!;
    const b = ed.addNode('ImageBlur', [300, 0])!;
    ed.connect(a, 'image', b, 'image');
    ed.select([a, b]);
    ed.duplicate();
    expect(Object.keys(ed.graph.nodes)).toHaveLength(4);
    expect(ed.graph.edges).toHaveLength(2);
    expect(ed.s.selNodes).toHaveLength(2);
    ed.toggleBypass();
    expect(ed.s.selNodes.every((id) => ed.graph.nodes[id].bypass)).toBe(true);
    ed.groupSelection({});
    expect(ed.graph.groups).toHaveLength(1);
    ed.select(ed.s.selNodes);
    ed.deleteSelection();
    expect(Object.keys(ed.graph.nodes).sort()).toEqual([a, b].sort());
    ed.doUndo();
    expect(Object.keys(ed.graph.nodes)).toHaveLength(4);
  });

  it('edits a loop body as a sub-graph and returns', () => {
    const d = ed.addNode('Denoise', [0, 0])!;
    ed.openBody(d);
    expect(ed.s.path).toEqual([d]);
    expect(Object.keys(ed.graph.nodes).sort()).toEqual(['in', 'out']);
    expect(ed.loopOwner).toBe('Denoise');
    const inner = ed.addNode('ImageBlur', [100, 100])!;
    ed.leaveBody();
    expect(ed.s.path).toEqual([]);
    const wf = ed.workflow();
    expect(Object.keys(wf.nodes[d].body!.nodes).sort()).toEqual(['in', inner, 'out'].sort());
    ed.doUndo(); // removes the inner node again, from the root view
    expect(Object.keys(ed.workflow().nodes[d].body!.nodes).sort()).toEqual(['in', 'out']);
  });
});
