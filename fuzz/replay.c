/* Replays fuzz inputs without libFuzzer: links with one fuzz target and
 * calls its LLVMFuzzerTestOneInput on every file named on the command line
 * (directories: every file in them, in name order). Built with the
 * project's compiler into build/fuzz/ and build-asan/fuzz/ so that `make
 * test` replays the seed corpus and every regression input on both builds
 * (tests/integration/test_fuzz_replay.py).
 *
 * usage: fuzz_TARGET PATH... ; exit status 0 when every input ran. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    size_t cap = 4096, len = 0;
    uint8_t *buf = malloc(cap);
    size_t n;
    while (buf && (n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    if (!buf) return -1;
    /* Copy to an exact-size buffer so ASan sees overreads. */
    uint8_t *exact = malloc(len ? len : 1);
    if (!exact) return -1;
    memcpy(exact, buf, len);
    free(buf);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    return 0;
}

static int cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
    int rc = 0, count = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st)) continue; /* a target may have no regressions yet */
        if (!S_ISDIR(st.st_mode)) {
            rc |= run_file(argv[i]);
            count++;
            continue;
        }
        struct dirent **ents;
        int n = scandir(argv[i], &ents, NULL, NULL);
        if (n < 0) continue;
        char **names = calloc((size_t)n + 1, sizeof *names);
        int k = 0;
        for (int j = 0; j < n; j++) {
            if (ents[j]->d_name[0] != '.') names[k++] = strdup(ents[j]->d_name);
            free(ents[j]);
        }
        free(ents);
        qsort(names, (size_t)k, sizeof *names, cmp);
        for (int j = 0; j < k; j++) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[i], names[j]);
            fprintf(stderr, "replay: %s\n", path);
            rc |= run_file(path);
            count++;
            free(names[j]);
        }
        free(names);
    }
    fprintf(stderr, "replay: %d inputs\n", count);
    return rc ? 1 : 0;
}
