/*
 * Loads the module with dlopen and makes the first calls every consumer makes, no card needed:
 * C_GetSlotList before C_Initialize (CKR_CRYPTOKI_NOT_INITIALIZED), C_GetFunctionList,
 * C_Initialize (CKR_OK, then CKR_CRYPTOKI_ALREADY_INITIALIZED), C_GetInfo, C_GetSlotList
 * (count, then the list), C_Finalize. scripts/cross-check.sh builds it for armv7 musl and runs
 * it under qemu-arm against the armv7 musl module, with a configuration that gives 0 slots.
 *
 *   cc -std=c11 -Wall -Wextra -Werror -I include -o load_module tests/c/load_module.c -ldl
 *   ./load_module MODULE EXPECTED_SLOTS
 *
 * Prints one `key=value` line per result; exit 0 when every call returned what it should.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

#include "pkcs11.h"

static int failures;

static void expect_rv(const char *call, CK_RV got, CK_RV want)
{
    printf("%s=0x%lx\n", call, (unsigned long)got);
    if (got != want) {
        fprintf(stderr, "%s returned 0x%lx, expected 0x%lx\n", call, (unsigned long)got,
                (unsigned long)want);
        failures++;
    }
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODULE EXPECTED_SLOTS\n", argv[0]);
        return 2;
    }
    CK_ULONG expected_slots = strtoul(argv[2], NULL, 10);
    void *module = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!module) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    CK_C_GetFunctionList get_function_list =
        (CK_C_GetFunctionList)dlsym(module, "C_GetFunctionList");
    if (!get_function_list) {
        fprintf(stderr, "dlsym C_GetFunctionList: %s\n", dlerror());
        return 1;
    }
    CK_FUNCTION_LIST_PTR p11 = NULL;
    expect_rv("C_GetFunctionList", get_function_list(&p11), CKR_OK);
    if (!p11)
        return 1;
    printf("sizeof_CK_ULONG=%zu\nfunction_list_version=%u.%u\n", sizeof(CK_ULONG),
           p11->version.major, p11->version.minor);

    CK_ULONG count = 99;
    expect_rv("C_GetSlotList_before_C_Initialize", p11->C_GetSlotList(CK_FALSE, NULL, &count),
              CKR_CRYPTOKI_NOT_INITIALIZED);
    expect_rv("C_Initialize", p11->C_Initialize(NULL), CKR_OK);
    expect_rv("C_Initialize_again", p11->C_Initialize(NULL), CKR_CRYPTOKI_ALREADY_INITIALIZED);

    CK_INFO info;
    expect_rv("C_GetInfo", p11->C_GetInfo(&info), CKR_OK);
    printf("manufacturer=%.32s\ncryptoki_version=%u.%u\n", (const char *)info.manufacturerID,
           info.cryptokiVersion.major, info.cryptokiVersion.minor);

    count = 99;
    expect_rv("C_GetSlotList_count", p11->C_GetSlotList(CK_FALSE, NULL, &count), CKR_OK);
    printf("slots=%lu\n", (unsigned long)count);
    if (count != expected_slots) {
        fprintf(stderr, "%lu slots, expected %lu\n", (unsigned long)count,
                (unsigned long)expected_slots);
        failures++;
    }
    CK_SLOT_ID slots[16];
    CK_ULONG room = sizeof slots / sizeof slots[0];
    expect_rv("C_GetSlotList", p11->C_GetSlotList(CK_FALSE, slots, &room), CKR_OK);
    expect_rv("C_Finalize", p11->C_Finalize(NULL), CKR_OK);
    dlclose(module);
    printf("failures=%d\n", failures);
    return failures ? 1 : 0;
}
