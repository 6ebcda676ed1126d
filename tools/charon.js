#!/usr/bin/env node
// The `charon` command: registers tsx so the TypeScript sources run directly, then hands over to the CLI.
import { register } from 'tsx/esm/api';
// onnxruntime's telemetry stays off in this process and every device process it starts
// (src/native/runtime.ts says why); set before anything can load onnxruntime.
process.env.ORT_DISABLE_TELEMETRY = '1';
register();
await import('./cli.ts');
