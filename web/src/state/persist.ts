// Unsaved work survives a reload or a lost server: the document is kept in localStorage.

import type { Workflow } from '../api/types';

const KEY = 'latentloom.editor.v1';
const CLIP = 'latentloom.clipboard.v1';

export interface Saved {
  workflow: Workflow;
  path: string[];
  file: { path: string | null; source: 'user' | 'builtin' | null };
  dirty: boolean;
}

export function loadSaved(): Saved | null {
  try {
    const raw = localStorage.getItem(KEY);
    if (!raw) return null;
    const s = JSON.parse(raw) as Saved;
    return s && s.workflow && typeof s.workflow === 'object' ? s : null;
  } catch {
    return null;
  }
}

export function storeSaved(s: Saved): void {
  try {
    localStorage.setItem(KEY, JSON.stringify(s));
  } catch {
    // storage full or disabled: nothing more we can do here
  }
}

export function clearSaved(): void {
  try {
    localStorage.removeItem(KEY);
  } catch {
    /* ignore */
  }
}

/** The clipboard shared by all tabs of this editor (same origin). */
export function writeClipboard(text: string): void {
  try {
    localStorage.setItem(CLIP, text);
  } catch {
    /* ignore */
  }
}

export function readClipboard(): string | null {
  try {
    return localStorage.getItem(CLIP);
  } catch {
    return null;
  }
}
