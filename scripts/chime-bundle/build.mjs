// Builds web/vendor/amazon-chime-sdk.js from the pinned amazon-chime-sdk-js (package-lock.json), or writes it to
// the path given as the first argument (scripts/test builds a second copy and compares: the committed bundle
// must be exactly what the lockfile produces).
import * as esbuild from 'esbuild';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const outfile = process.argv[2] ? path.resolve(process.argv[2]) : path.join(here, '..', '..', 'web', 'vendor', 'amazon-chime-sdk.js');

await esbuild.build({
  absWorkingDir: here,
  entryPoints: ['entry.js'],
  bundle: true,
  format: 'esm',
  minify: true,
  legalComments: 'eof',
  target: 'es2020',
  platform: 'browser',
  // amazon-chime-sdk-js requires the messaging client only for messaging sessions, which the page does not use.
  alias: { '@aws-sdk/client-chime-sdk-messaging': './no-messaging.js' },
  // Some of its dependencies still say `global` (Node's name for it); browsers call it globalThis.
  define: { global: 'globalThis' },
  outfile,
  logLevel: 'warning',
});
console.log(`wrote ${path.relative(process.cwd(), outfile)}`);
