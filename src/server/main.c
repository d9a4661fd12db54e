#include <stdio.h>
int main(void) { puts("ketch: not yet"); return 0; }
