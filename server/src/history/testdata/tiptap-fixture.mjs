// Writes the TipTap fixture of the history engine's ProseMirror JSON test:
//   tiptap.bin  - a Yjs update (v1) holding a TipTap document, written by @tiptap/y-tiptap
//   tiptap.json - what TipTap shows for it: y-tiptap's conversion of the fragment to a
//                 ProseMirror node under the StarterKit schema, `.toJSON()` (= editor.getJSON())
// Run from the repository root after `npm ci` in client-demo:
//   node server/src/history/testdata/tiptap-fixture.mjs
import { writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const modules = join(here, '../../../../client-demo/node_modules')
const { getSchema } = await import(join(modules, '@tiptap/core/dist/index.js'))
const { default: StarterKit } = await import(join(modules, '@tiptap/starter-kit/dist/index.js'))
const Y = await import(join(modules, 'yjs/dist/yjs.mjs'))
const yt = await import(join(modules, '@tiptap/y-tiptap/dist/y-tiptap.js'))

const schema = getSchema([StarterKit])
const text = (t, marks) => (marks ? { type: 'text', text: t, marks } : { type: 'text', text: t })
const para = (...content) => ({ type: 'paragraph', content })
const doc = {
  type: 'doc',
  content: [
    { type: 'heading', attrs: { level: 1 }, content: [text('Tandem 😀 history')] },
    para(
      text('Plain, '),
      text('bold', [{ type: 'bold' }]),
      text(', '),
      text('bold italic', [{ type: 'bold' }, { type: 'italic' }]),
      text(' and '),
      text('a link', [{ type: 'link', attrs: { href: 'https://example.com/x?y=1', target: '_blank' } }]),
      text(' with '),
      text('code', [{ type: 'code' }]),
      text('.'),
    ),
    para(text('line one'), { type: 'hardBreak' }, text('line two', [{ type: 'strike' }])),
    { type: 'paragraph' },
    { type: 'heading', attrs: { level: 3 }, content: [text('Lists')] },
    {
      type: 'bulletList',
      content: [
        { type: 'listItem', content: [para(text('first'))] },
        {
          type: 'listItem',
          content: [
            para(text('second')),
            { type: 'orderedList', attrs: { start: 3 }, content: [{ type: 'listItem', content: [para(text('nested'))] }] },
          ],
        },
      ],
    },
    { type: 'blockquote', content: [para(text('Quoted, '), text('underlined', [{ type: 'underline' }]))] },
    { type: 'codeBlock', attrs: { language: 'rust' }, content: [text('fn main() {\n    println!("hi");\n}')] },
    { type: 'horizontalRule' },
    para(text('naïve café ☃ 日本語')),
  ],
}

const ydoc = yt.prosemirrorJSONToYDoc(schema, doc, 'default')
const shown = yt.yXmlFragmentToProseMirrorRootNode(ydoc.getXmlFragment('default'), schema).toJSON()
writeFileSync(join(here, 'tiptap.bin'), Y.encodeStateAsUpdate(ydoc))
writeFileSync(join(here, 'tiptap.json'), JSON.stringify(shown, null, 2) + '\n')
console.log('wrote tiptap.bin and tiptap.json')
