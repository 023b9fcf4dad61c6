// The undo stack: it keeps earlier versions of an immutable document. Consecutive edits with the same
// `mergeKey` (typing in one widget, dragging) fold into one step; `limit` bounds the memory used.

export interface UndoEntry<T> {
  state: T;
  label: string;
}

export class UndoStack<T> {
  private past: UndoEntry<T>[] = [];
  private future: UndoEntry<T>[] = [];
  private lastKey: string | null = null;
  private lastTime = 0;

  constructor(
    private readonly limit = 200,
    private readonly mergeWindowMs = 1500,
    private readonly now: () => number = () => Date.now(),
  ) {}

  /**
   * Record that the document is about to change from `before` (by the edit `label`). Edits with the
   * same non-null `mergeKey` within the merge window keep the first `before`.
   */
  record(before: T, label: string, mergeKey: string | null = null): void {
    const t = this.now();
    if (mergeKey !== null && mergeKey === this.lastKey && t - this.lastTime <= this.mergeWindowMs && this.past.length) {
      this.lastTime = t;
      this.future = [];
      return;
    }
    this.past.push({ state: before, label });
    if (this.past.length > this.limit) this.past.splice(0, this.past.length - this.limit);
    this.future = [];
    this.lastKey = mergeKey;
    this.lastTime = t;
  }

  /** Stop merging into the previous step (e.g. a widget lost focus). */
  seal(): void {
    this.lastKey = null;
  }

  undo(current: T): T | null {
    const e = this.past.pop();
    if (!e) return null;
    this.future.push({ state: current, label: e.label });
    this.lastKey = null;
    return e.state;
  }

  redo(current: T): T | null {
    const e = this.future.pop();
    if (!e) return null;
    this.past.push({ state: current, label: e.label });
    this.lastKey = null;
    return e.state;
  }

  get canUndo(): boolean {
    return this.past.length > 0;
  }

  get canRedo(): boolean {
    return this.future.length > 0;
  }

  get undoLabel(): string | null {
    return this.past.length ? this.past[this.past.length - 1].label : null;
  }

  get redoLabel(): string | null {
    return this.future.length ? this.future[this.future.length - 1].label : null;
  }

  clear(): void {
    this.past = [];
    this.future = [];
    this.lastKey = null;
  }
}
