// Text chunks of a PNG (tEXt, zTXt, iTXt): ComfyUI and our SaveImage store `workflow` and `prompt` there.

const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

async function inflate(data: Uint8Array): Promise<Uint8Array> {
  const ds = new DecompressionStream('deflate');
  const stream = new Blob([data as BlobPart]).stream().pipeThrough(ds);
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

export function isPng(bytes: Uint8Array): boolean {
  return SIGNATURE.every((b, i) => bytes[i] === b);
}

export async function readPngText(bytes: Uint8Array): Promise<Record<string, string>> {
  if (!isPng(bytes)) throw new Error('not a PNG file');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const latin1 = new TextDecoder('latin1');
  const utf8 = new TextDecoder('utf-8');
  const out: Record<string, string> = {};
  let off = 8;
  while (off + 12 <= bytes.length) {
    const len = view.getUint32(off);
    const type = latin1.decode(bytes.subarray(off + 4, off + 8));
    const data = bytes.subarray(off + 8, off + 8 + len);
    off += 12 + len;
    if (type === 'IEND') break;
    if (type !== 'tEXt' && type !== 'zTXt' && type !== 'iTXt') continue;
    const z = data.indexOf(0);
    if (z < 0) continue;
    const key = latin1.decode(data.subarray(0, z));
    try {
      if (type === 'tEXt') {
        out[key] = latin1.decode(data.subarray(z + 1));
      } else if (type === 'zTXt') {
        out[key] = latin1.decode(await inflate(data.subarray(z + 2)));
      } else {
        const compressed = data[z + 1] === 1;
        let p = z + 3;
        const langEnd = data.indexOf(0, p);
        p = langEnd + 1;
        const transEnd = data.indexOf(0, p);
        p = transEnd + 1;
        const text = data.subarray(p);
        out[key] = utf8.decode(compressed ? await inflate(text) : text);
      }
    } catch {
      // a damaged chunk: skip it, the others may still hold the workflow
    }
  }
  return out;
}
