// Duty console smoke test in Firefox (issue #6: "works in current Chromium and Firefox").
// Driven by tests/test_console_firefox.py: logs in, prints READY once the live stream is
// connected, waits for the SOS the test then publishes, claims it and waits for the claim in
// the audit trail. Prints "SHOWN <ms>" and "OK"; any failure exits non-zero with the reason.
import puppeteer from 'puppeteer-core';
import readline from 'node:readline';

const [url, user, password, firefox] = process.argv.slice(2);
const browser = await puppeteer.launch({ browser: 'firefox', executablePath: firefox, headless: true });
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1366, height: 768 });
  await page.goto(url);
  await page.type('[data-testid=login-username]', user);
  await page.type('[data-testid=login-password]', password);
  await page.click('[data-testid=login-submit]');
  await page.waitForSelector('[data-testid=connection-status][data-state=connected]', { timeout: 15000 });
  console.log('READY');
  // The test publishes the SOS after READY and answers with a line when it has.
  const rl = readline.createInterface({ input: process.stdin });
  await new Promise((resolve) => rl.once('line', resolve));
  const published = Date.now();
  const row = await page.waitForSelector('[data-testid=alert-row][data-priority="1"]', { timeout: 10000 });
  console.log(`SHOWN ${Date.now() - published}`);
  await row.click();
  await page.waitForSelector('[data-testid=ack-button]', { visible: true });
  await page.click('[data-testid=ack-button]');
  await page.waitForSelector('[data-testid=audit-entry][data-action=acknowledged]', { timeout: 10000 });
  const claim = await page.$eval('[data-testid=audit-entry][data-action=acknowledged]', (e) => e.textContent);
  if (!claim.includes(user)) throw new Error(`claim entry does not name ${user}: ${claim}`);
  console.log('OK');
} finally {
  await browser.close();
}
