import { type EditorState, editor } from './editor';
import { useStore } from './store';

/** Subscribe a component to one slice of the editor state (return stable values from `sel`). */
export function useEd<T>(sel: (s: EditorState) => T): T {
  return useStore(editor.store, sel);
}
