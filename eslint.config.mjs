// ESLint (flat config) with typescript-eslint, run by `npm run lint:ts`.
// Type-aware rules (recommendedTypeChecked) read tsconfig.eslint.json, which covers
// src/, scripts/, test/ and fuzz/. Formatting is prettier's job, not eslint's.
//
// typescript-eslint is held at ~8.58 (package.json): from 8.59.0 on,
// no-unnecessary-type-assertion flags assertions that do change the type, such as
// `err as NodeJS.ErrnoException | undefined` (a union with a type that only adds optional
// properties; typescript-eslint issues 12249, 12270, 12277), and `eslint --fix` then
// deletes them and breaks the build (two places in this code). Move on when that is fixed.
import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['**/dist/', '**/build/', 'build-n*/', 'prebuilds/', '**/node_modules/', 'coverage/', 'native/', 'train/'] },
  {
    linterOptions: {
      // Every eslint-disable comment must still silence something.
      reportUnusedDisableDirectives: 'error',
    },
  },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    files: ['**/*.ts', '**/*.mts'],
    languageOptions: {
      parserOptions: { project: './tsconfig.eslint.json', tsconfigRootDir: import.meta.dirname },
    },
  },
  {
    rules: {
      // `_name` marks a value left unused on purpose (a destructured field dropped from a copy).
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
    },
  },
  {
    // Tests feed the API deliberately ill-typed values to check its runtime validation,
    // and read JSON (reports, manifests, CLI output) whose shape the assertions check:
    // `any` is the point there, not an accident.
    files: ['test/**/*.ts'],
    rules: {
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
    },
  },
  {
    // The type tests are compiled by `npm run test:types` (test-d/tsconfig.json, against
    // dist/); here they get the rules that need no types.
    files: ['test-d/**/*.ts', 'test-d/**/*.mts'],
    ...tseslint.configs.disableTypeChecked,
  },
  {
    // Plain CommonJS scripts run by node (install, prebuild, the Python test runner).
    files: ['**/*.js', '**/*.cjs'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: { sourceType: 'commonjs', globals: globals.node },
    rules: { ...tseslint.configs.disableTypeChecked.rules, '@typescript-eslint/no-require-imports': 'off' },
  },
  {
    files: ['**/*.mjs'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: { globals: globals.node },
  },
);
