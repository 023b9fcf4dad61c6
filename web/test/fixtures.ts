import type { Catalog, InputSchema, NodeSchema } from '../src/api/types';

export function inp(name: string, type: string, extra: Partial<InputSchema> = {}): InputSchema {
  const link = !['INT', 'FLOAT', 'STRING', 'BOOLEAN', '*'].includes(type);
  return {
    name, type, required: true, link_only: link, default: null, min: null, max: null, step: null, choices: null,
    description: '', display_name: name, multiline: false, slider: false, seed: false, upload: null, advanced: false, ...extra,
  };
}

export function node(name: string, inputs: InputSchema[], outputs: [string, string][], extra: Partial<NodeSchema> = {}): NodeSchema {
  return {
    name, display_name: name, category: 'test', description: '', inputs,
    outputs: outputs.map(([n, t]) => ({ name: n, type: t, description: '' })),
    output_node: false, deterministic: true, aliases: [], loop: null, ...extra,
  };
}

export const catalog: Catalog = {
  types: [
    { name: '*', color: '#bdbdbd', supertypes: [], description: '' },
    { name: 'INT', color: '#7cb342', supertypes: [], description: '' },
    { name: 'FLOAT', color: '#43a047', supertypes: [], description: '' },
    { name: 'STRING', color: '#8d6e63', supertypes: [], description: '' },
    { name: 'IMAGE', color: '#64b5f6', supertypes: [], description: '' },
    { name: 'MASK', color: '#81c784', supertypes: [], description: '' },
    { name: 'LATENT', color: '#ff80ab', supertypes: [], description: '' },
    { name: 'UNET', color: '#b39ddb', supertypes: [], description: '' },
    { name: 'INPAINT_UNET', color: '#9575cd', supertypes: ['UNET'], description: '' },
    { name: 'SDXL_INPAINT_UNET', color: '#7e57c2', supertypes: ['INPAINT_UNET'], description: '' },
  ],
  nodes: {
    LoadImage: node('LoadImage', [inp('image', 'STRING', { choices: ['a.png', 'b.png'], upload: 'image' })], [['image', 'IMAGE'], ['mask', 'MASK']], { category: 'image' }),
    ImageBlur: node('ImageBlur', [inp('image', 'IMAGE'), inp('radius', 'INT', { default: 2, min: 1, max: 64, required: false })], [['image', 'IMAGE']], { category: 'image/adjust', aliases: ['Blur'] }),
    SaveImage: node('SaveImage', [inp('images', 'IMAGE'), inp('filename_prefix', 'STRING', { default: 'loom', required: false })], [], { output_node: true, category: 'image' }),
    Seed: node('Seed', [inp('seed', 'INT', { default: 0, min: 0, seed: true, required: false })], [['seed', 'INT']], { category: 'primitives' }),
    Denoise: node(
      'Denoise',
      [inp('unet', 'UNET'), inp('latent', 'LATENT'), inp('steps', 'INT', { default: 20, required: false })],
      [['latent', 'LATENT']],
      {
        category: 'sampling',
        loop: {
          body_inputs: [{ name: 'latent', type: 'LATENT', description: '' }, { name: 'step', type: 'INT', description: '' }],
          body_outputs: [inp('latent', 'LATENT')],
          default_body: {
            nodes: {
              in: { type: 'LoopInput', ui: { pos: [0, 0] } },
              out: { type: 'LoopOutput', inputs: { latent: { node: 'in', output: 'latent' } }, ui: { pos: [300, 0] } },
            },
          },
        },
      },
    ),
  },
};
