// Writes .gz and .br beside every compressible file of the build, so the
// server sends them as they are (no compression at run time).
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { brotliCompressSync, constants, gzipSync } from 'node:zlib';

const COMPRESSIBLE = /\.(html|js|mjs|css|json|svg|txt|map)$/;
const MIN_BYTES = 1024;

async function* files(dir) {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) yield* files(p);
    else yield p;
  }
}

const root = process.argv[2] ?? 'dist';
let count = 0;
for await (const file of files(root)) {
  if (!COMPRESSIBLE.test(file)) continue;
  const data = await readFile(file);
  if (data.length < MIN_BYTES) continue;
  const gz = gzipSync(data, { level: 9 });
  const br = brotliCompressSync(data, {
    params: { [constants.BROTLI_PARAM_QUALITY]: 11, [constants.BROTLI_PARAM_SIZE_HINT]: data.length },
  });
  if (gz.length < data.length) await writeFile(`${file}.gz`, gz);
  if (br.length < data.length) await writeFile(`${file}.br`, br);
  count++;
}
console.log(`compressed ${count} files in ${root}`);
