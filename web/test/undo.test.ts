import { describe, expect, it } from 'vitest';
import { UndoStack } from '../src/model/undo';

describe('UndoStack', () => {
  it('undoes and redoes in order', () => {
    const u = new UndoStack<number>();
    let s = 0;
    for (const next of [1, 2, 3]) {
      u.record(s, `set ${next}`);
      s = next;
    }
    expect(u.canUndo).toBe(true);
    expect(u.undoLabel).toBe('set 3');
    s = u.undo(s)!;
    expect(s).toBe(2);
    s = u.undo(s)!;
    expect(s).toBe(1);
    expect(u.canRedo).toBe(true);
    s = u.redo(s)!;
    expect(s).toBe(2);
    s = u.redo(s)!;
    expect(s).toBe(3);
    expect(u.redo(s)).toBeNull();
  });

  it('drops the redo branch on a new edit', () => {
    const u = new UndoStack<string>();
    u.record('a', 'b');
    let s = u.undo('b')!;
    expect(s).toBe('a');
    u.record(s, 'c');
    s = 'c';
    expect(u.canRedo).toBe(false);
    expect(u.undo(s)).toBe('a');
  });

  it('merges edits with the same key inside the window, not after seal or timeout', () => {
    let now = 0;
    const u = new UndoStack<string>(100, 1000, () => now);
    u.record('', 'type', 'w');
    now = 100;
    u.record('h', 'type', 'w');
    now = 200;
    u.record('he', 'type', 'w');
    expect(u.undo('hel')).toBe('');
    expect(u.canUndo).toBe(false);

    const v = new UndoStack<string>(100, 1000, () => now);
    v.record('', 'type', 'w');
    v.seal();
    v.record('a', 'type', 'w');
    now = 5000;
    v.record('ab', 'type', 'w');
    expect(v.undo('abc')).toBe('ab');
    expect(v.undo('ab')).toBe('a');
    expect(v.undo('a')).toBe('');
  });

  it('does not merge different keys', () => {
    const u = new UndoStack<number>();
    u.record(0, 'a', 'x');
    u.record(1, 'b', 'y');
    expect(u.undo(2)).toBe(1);
    expect(u.undo(1)).toBe(0);
  });

  it('keeps at most `limit` steps', () => {
    const u = new UndoStack<number>(3);
    for (let i = 0; i < 10; i++) u.record(i, 'x');
    let s = 10;
    const seen: number[] = [];
    for (let r = u.undo(s); r !== null; r = u.undo(s)) {
      seen.push(r);
      s = r;
    }
    expect(seen).toEqual([9, 8, 7]);
  });

  it('clear forgets everything', () => {
    const u = new UndoStack<number>();
    u.record(1, 'x');
    u.clear();
    expect(u.canUndo).toBe(false);
    expect(u.undo(2)).toBeNull();
  });
});
