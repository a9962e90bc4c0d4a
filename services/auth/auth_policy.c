/*
 * auth_policy — a tenant's password rules: minimum length, letter/digit/symbol,
 * and the refusal of common passwords. History (no reuse of the last N) needs the
 * stored hashes and is checked by the caller; maximum age is applied at login.
 *
 * Every broken rule is reported, so a 422 names them all at once.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"

const struct auth_policy auth_policy_default = {
	.min_length = 12,
	.require_letter = true,
	.require_digit = true,
	.require_symbol = false,
	.history = 5,
	.max_age_days = 0,
};

/* bsearch comparator over the sorted list. */
static int auth_policy_cmp(const void *key, const void *elem)
{
	return strcmp(key, *(const char *const *)elem);
}

/* 1 if password, lower-cased, is in the common list. */
int auth_password_is_common(const char *password)
{
	char low[64];
	size_t n = strlen(password);
	int found;

	if (n >= sizeof low)
		return 0; /* the list's longest entry is far shorter */
	for (size_t i = 0; i < n; i++)
		low[i] = (char)tolower((unsigned char)password[i]);
	low[n] = '\0';
	found = bsearch(low, auth_common_passwords, auth_common_passwords_n,
			sizeof auth_common_passwords[0], auth_policy_cmp) != NULL;
	explicit_bzero(low, sizeof low);
	return found;
}

/* Count UTF-8 code points (continuation bytes are not counted). */
static size_t auth_policy_chars(const char *s)
{
	size_t n = 0;

	for (; *s != '\0'; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			n++;
	return n;
}

/* Append one broken rule if there is room. */
static void auth_policy_add(struct auth_rule_error *errs, size_t *n, const char *field,
			    const char *message)
{
	if (*n < AUTH_RULES_MAX) {
		errs[*n].field = field;
		errs[*n].message = message;
		(*n)++;
	}
}

/* Check the composition rules and the common list; one error per broken rule. */
size_t auth_policy_check(const struct auth_policy *pol, const char *field, const char *password,
			 struct auth_rule_error *errs)
{
	size_t n = 0, len = strlen(password);
	int letter = 0, digit = 0, symbol = 0;

	for (const unsigned char *p = (const unsigned char *)password; *p != '\0'; p++) {
		if (isalpha(*p) || *p >= 0x80) /* non-ASCII letters count as letters */
			letter = 1;
		else if (isdigit(*p))
			digit = 1;
		else if (*p >= 0x20 && *p != 0x7f)
			symbol = 1;
	}
	if (len > AUTH_PASSWORD_MAX)
		auth_policy_add(errs, &n, field, "too long (at most 1024 bytes)");
	if (auth_policy_chars(password) < (size_t)pol->min_length)
		auth_policy_add(errs, &n, field, "too short (min_length)");
	if (pol->require_letter && !letter)
		auth_policy_add(errs, &n, field, "needs a letter (require_letter)");
	if (pol->require_digit && !digit)
		auth_policy_add(errs, &n, field, "needs a digit (require_digit)");
	if (pol->require_symbol && !symbol)
		auth_policy_add(errs, &n, field, "needs a symbol (require_symbol)");
	for (const unsigned char *p = (const unsigned char *)password; *p != '\0'; p++)
		if (*p < 0x20 || *p == 0x7f) {
			auth_policy_add(errs, &n, field, "control characters are not allowed");
			break;
		}
	if (auth_password_is_common(password))
		auth_policy_add(errs, &n, field, "is one of the most common passwords (common)");
	return n;
}

/* Bounds of a policy an admin sets. */
int auth_policy_validate(const struct auth_policy *pol, struct auth_rule_error *errs, size_t *n_r)
{
	size_t n = 0;

	if (pol->min_length < 8 || pol->min_length > 128)
		auth_policy_add(errs, &n, "min_length", "must be between 8 and 128");
	if (pol->history < 0 || pol->history > 24)
		auth_policy_add(errs, &n, "history", "must be between 0 and 24");
	if (pol->max_age_days < 0 || pol->max_age_days > 3650)
		auth_policy_add(errs, &n, "max_age_days", "must be between 0 and 3650");
	*n_r = n;
	return n == 0 ? 0 : -1;
}
