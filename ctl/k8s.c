#include "ctl.h"
int cmd_k8s(int argc, char **argv) { ctl_die(EXIT_BAD_FEATURE, "k8s: todo"); }
