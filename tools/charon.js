#!/usr/bin/env node
// The `charon` command: registers tsx so the TypeScript sources run directly, then hands over to the CLI.
import { register } from 'tsx/esm/api';
register();
await import('./cli.ts');
