/* placeholder, filled below */
#include "k8s.h"
int cmd_migrate(int argc, char **argv)
{
    ctl_die(EXIT_BAD_FEATURE, "migrate: not yet");
}
