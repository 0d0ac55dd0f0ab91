import type { Page } from 'playwright-core';
import type { Login } from './platform.js';

/**
 * Signs in through the console's own form (console/README.md: the `Sign in` form with its
 * `E-mail` and `Password` fields) and waits for the fleet map, where a signed-in person lands.
 */
export async function signIn(page: Page, baseUrl: string, who: Login): Promise<void> {
  await submitSignIn(page, baseUrl, who);
  await page.waitForURL(/#\/map/, { timeout: 30_000 });
}

/** Fills in and submits the sign-in form (without waiting for where it leads). */
export async function submitSignIn(page: Page, baseUrl: string, who: Login): Promise<void> {
  await page.goto(`${baseUrl}/#/signin`);
  const form = page.getByRole('form', { name: 'Sign in' });
  await form.getByLabel('E-mail').fill(who.email);
  await form.getByLabel('Password', { exact: true }).fill(who.password);
  await form.getByRole('button', { name: 'Sign in' }).click();
}
